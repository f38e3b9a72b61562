"""What `kws evaluate` prints for a stream manifest: a headline, and recall, false accepts per hour and the
chosen threshold of each keyword with the overall line, the substitutions and any notes. (Rich renderables
beside kws.console's for clip evaluations, which has no room left under the module size limit.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kws.detect.matching import Counts
from kws.thresholds import threshold_text

if TYPE_CHECKING:
    from kws.detect.evaluation import StreamOutcome

N_PAIRS_SHOWN = 10


def _row(name: str, c: Counts, threshold: str) -> list[str]:
    recall = "-" if c.recall is None else f"{c.recall:.1%}"
    return [
        name,
        str(c.n_events),
        str(c.hits),
        recall,
        str(c.false_accepts),
        f"{c.fa_per_hour:.2f}",
        str(c.substitutions),
        threshold,
    ]


def stream_evaluation_renderables(outcomes: Sequence[StreamOutcome]) -> list[RenderableType]:
    """Per stream manifest: a headline, the per-keyword table, substitutions, notes, where the files are."""
    items: list[RenderableType] = []
    for o in outcomes:
        r, total = o.report, o.report.overall
        recall = "-" if total.recall is None else f"{total.recall:.2%}"
        how = (
            f"thresholds for {r.options['target_fa_per_hour']:g} FA/h per keyword"
            if r.thresholds_from is None
            else f"thresholds from {escape(r.thresholds_from)}"
        )
        items.append(
            f"\n[bold]{escape(o.manifest.name)}[/]: recall [bold]{recall}[/] ({total.hits}/{total.n_events} "
            f"events), [bold]{total.fa_per_hour:.2f}[/] false accepts per hour ({total.false_accepts} in "
            f"{r.hours:.2f} h, {r.n_recordings} recordings), {total.substitutions} substitutions; "
            f"{how}; scored at {r.real_time_factor:,.0f}x real time"
        )
        table = Table(
            title=f"per keyword, at the {'given' if r.thresholds_from else 'chosen'} thresholds",
            title_justify="left",
        )
        for name in (
            "keyword",
            "events",
            "hits",
            "recall",
            "false accepts",
            "FA/h",
            "substitutions",
            "threshold",
        ):
            table.add_column(name, justify="left" if name == "keyword" else "right")
        for i, (label, counts) in enumerate(r.per_keyword.items()):
            point = r.operating_points.get(label)
            threshold = (
                "-" if point is None else threshold_text(point.threshold) + ("*" if point.note else "")
            )
            table.add_row(*_row(label, counts, threshold), end_section=i == len(r.per_keyword) - 1)
        table.add_row(*_row("overall", total, ""), style="bold")
        items.append(table)
        if r.substitutions:
            pairs = ", ".join(f"{t} -> {d} {n}" for t, d, n in r.substitutions[:N_PAIRS_SHOWN])
            items.append(Text(f"substitutions (event -> detected): {pairs}"))
        if r.note:
            items.append(Text(r.note, style="yellow"))
        for label, point in r.operating_points.items():
            if point.note:
                items.append(Text(f"* {label}: {point.note}", style="yellow"))
        thresholds = next((f for f in o.files if f.name.startswith("thresholds")), None)
        where = escape(str(o.out_dir))
        written = "" if thresholds is None else f"thresholds: {escape(str(thresholds))}; "
        items.append(f"report: {where} ({o.seconds:.1f} s); {written}listen: kws listen-errors {where}")
    return items
