"""errors.html: one self-contained page to look at and listen to an evaluation's misclassifications.

Everything is embedded (audio as base64 wav data URIs, pictures as base64 PNGs, CSS and JS inline), so the
page works offline, can be mailed around, and never fetches anything.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws.audio import HOP_LENGTH, INT16_SCALE, N_FFT, N_MELS, SAMPLE_RATE, WIN_LENGTH, read_wav
from kws.errors import DataError
from kws.evaluate.report import EvalReport, Misclassified, confusion_pairs
from kws.files import write_text_atomic
from kws.plots import pyplot

# The picture's log-mel uses the recipe's analysis window (kws.audio) so it shows what the model sees.
DYNAMIC_RANGE_DB = 80.0  # floor of the picture below the clip's loudest bin
N_PAIRS_SHOWN = 10


@dataclass
class PageResult:
    path: Path
    n_cards: int
    missing: list[str] = field(default_factory=list)  # clips that could not be read (card without audio)


def _mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """HTK-mel triangular filters `(n_freqs, n_mels)`, as torchaudio's MelSpectrogram defaults."""

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    mel_points = np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(sample_rate / 2)), n_mels + 2)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
    slopes = hz_points[None, :] - freqs[:, None]  # (n_freqs, n_mels + 2)
    diffs = np.diff(hz_points)
    down = -slopes[:, :-2] / diffs[:-1]
    up = slopes[:, 2:] / diffs[1:]
    return np.maximum(0.0, np.minimum(down, up))


_MEL = _mel_filterbank(N_FFT // 2 + 1, N_MELS, SAMPLE_RATE)


def log_mel_db(samples: np.ndarray) -> np.ndarray:
    """int16 or float samples `(samples,)` -> log-mel power in dB `(n_mels, frames)`, centred frames."""
    audio = samples.astype(np.float64)
    if samples.dtype == np.int16:
        audio /= INT16_SCALE
    if len(audio) < N_FFT:
        audio = np.pad(audio, (0, N_FFT - len(audio)))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP_LENGTH
    window = np.zeros(N_FFT)
    offset = (N_FFT - WIN_LENGTH) // 2
    window[offset : offset + WIN_LENGTH] = np.hanning(WIN_LENGTH + 1)[:-1]  # periodic Hann, centred
    idx = np.arange(N_FFT)[None, :] + HOP_LENGTH * np.arange(n_frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2  # (frames, n_freqs)
    db = 10.0 * np.log10(power @ _MEL + 1e-10)
    return np.maximum(db, db.max() - DYNAMIC_RANGE_DB).T


class ClipPicture:
    """Renders waveform + log-mel of a clip as a small PNG; one matplotlib figure is reused for speed."""

    def __init__(self, width_px: int = 340, height_px: int = 200) -> None:
        dpi = 100
        self._fig, (self._ax_wave, self._ax_mel) = pyplot().subplots(
            2, 1, figsize=(width_px / dpi, height_px / dpi), dpi=dpi, gridspec_kw={"height_ratios": [1, 2]}
        )
        self._fig.subplots_adjust(left=0.01, right=0.99, top=0.99, bottom=0.01, hspace=0.04)
        (self._line,) = self._ax_wave.plot([0.0], [0.0], color="#1f5f99", linewidth=0.5)
        self._ax_wave.set_ylim(-1.0, 1.0)
        self._image = self._ax_mel.imshow(
            np.zeros((N_MELS, 2)), origin="lower", aspect="auto", cmap="magma", interpolation="nearest"
        )
        for ax in (self._ax_wave, self._ax_mel):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color("#c8d0d8")
        self._ax_wave.axhline(0.0, color="#bbbbbb", linewidth=0.4)
        self._ax_wave.text(0.01, 0.95, "waveform", transform=self._ax_wave.transAxes, fontsize=6, va="top")
        self._ax_mel.text(
            0.01, 0.96, "log-mel", transform=self._ax_mel.transAxes, fontsize=6, va="top", color="white"
        )

    def png(self, samples: np.ndarray) -> bytes:
        audio = samples.astype(np.float32) / INT16_SCALE
        span_s = max(1.0, len(audio) / SAMPLE_RATE)  # same time scale for every clip of up to 1 s
        self._line.set_data(np.arange(len(audio)) / SAMPLE_RATE, audio)
        self._ax_wave.set_xlim(0.0, span_s)
        mel = log_mel_db(samples)
        self._image.set_data(mel)
        self._image.set_extent((0.0, mel.shape[1] * HOP_LENGTH / SAMPLE_RATE, 0.0, N_MELS))
        self._image.set_clim(float(mel.min()), float(mel.max()))
        self._ax_mel.set_xlim(0.0, span_s)
        buf = io.BytesIO()
        self._fig.savefig(buf, format="png")
        return buf.getvalue()

    def close(self) -> None:
        pyplot().close(self._fig)


def wav_bytes(samples: np.ndarray) -> bytes:
    """int16 samples -> a complete 16-bit PCM wav file in memory."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _card(rank: int, err: Misclassified, low: float, picture: str | None, audio: str | None) -> str:
    e = html.escape
    top_k = "".join(
        f'<li><span class="lbl{" true" if label == err.label else ""}">{e(label)}</span>'
        f'<span class="bar"><span style="width:{100 * p:.1f}%"></span></span>'
        f'<span class="pct">{p:.1%}</span></li>'
        for label, p in err.top_k
    )
    media = (
        f'<img class="pic" alt="waveform and log-mel of clip {err.index}" src="{picture}">'
        f'<audio controls preload="metadata" src="{audio}"></audio>'
        if picture and audio
        else '<p class="missing">audio file not found or unreadable</p>'
    )
    manifest_label = (
        f' <span class="note">(manifest: {e(err.manifest_label)})</span>' if err.manifest_label else ""
    )
    conf_class = "conf low" if err.confidence <= low else "conf"
    return f"""
<article class="card" data-true="{e(err.label)}" data-pred="{e(err.predicted)}"
  data-conf="{err.confidence:.6f}">
  <header><span class="rank">#{rank}</span>
    <span class="true-lbl">{e(err.label)}</span>{manifest_label} <span class="arrow">&rarr;</span>
    <span class="pred-lbl">{e(err.predicted)}</span>
    <span class="{conf_class}" title="max softmax probability">{err.confidence:.1%}</span>
  </header>
  {media}
  <ol class="topk">{top_k}</ol>
  <p class="path" title="line {err.index} of the manifest (from 0)">{e(err.audio_filepath)}</p>
</article>"""


def _summary(report: EvalReport, n_errors_total: int, n_cards: int, sort: str) -> str:
    e = html.escape
    lo, hi = report.accuracy_ci95
    pairs = confusion_pairs(report, N_PAIRS_SHOWN)
    rows = "".join(
        f'<tr><td>{e(t)}</td><td>{e(p)}</td><td class="num">{c}</td>'
        f'<td><button type="button" class="pair" data-true="{e(t)}" data-pred="{e(p)}">show</button>'
        "</td></tr>"
        for t, p, c in pairs
    )
    facts: list[tuple[str, str]] = [
        ("accuracy", f"{report.accuracy:.2%} <small>(95% CI {lo:.2%} &ndash; {hi:.2%})</small>"),
        (f"top-{report.top_k} accuracy", f"{report.top_k_accuracy:.2%}"),
        ("clips", f"{report.num_samples:,}"),
        ("errors", f"{n_errors_total:,} <small>({n_cards:,} on this page, {e(sort)} order)</small>"),
        (f"low confidence (&le; {report.low_confidence_threshold:g})", f"{report.low_confidence_count:,}"),
        (
            "checkpoint",
            e(report.checkpoint) + (f" (step {report.checkpoint_step})" if report.checkpoint_step else ""),
        ),
        ("manifest", e(report.manifest)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    table = (
        f"<table><thead><tr><th>true</th><th>predicted</th><th>count</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if pairs
        else "<p>No confusions.</p>"
    )
    pairs_html = f"<div><h2>Most frequent confusions</h2>{table}</div>"
    return f'<section class="summary"><dl>{dl}</dl>{pairs_html}</section>'


def _options(values: Sequence[str]) -> str:
    return '<option value="">any</option>' + "".join(
        f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values
    )


def render_page(report: EvalReport, cards: Sequence[str], *, sort: str, title: str) -> str:
    """The complete HTML document around pre-rendered cards."""
    true_labels = sorted({m.label for m in report.misclassified})
    pred_labels = sorted({m.predicted for m in report.misclassified})
    summary = _summary(report, len(report.misclassified), len(cards), sort)
    return document(title, summary, true_labels, pred_labels, cards)


def document(
    title: str, summary: str, true_labels: Sequence[str], pred_labels: Sequence[str], cards: Sequence[str]
) -> str:
    """The page around a summary (HTML) and cards, with filters by true and predicted label and score."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
{summary}
<form class="filters" id="filters" onsubmit="return false">
  <label>true <select id="f-true">{_options(true_labels)}</select></label>
  <label>predicted <select id="f-pred">{_options(pred_labels)}</select></label>
  <label>confidence from <input type="range" id="f-min" min="0" max="1" step="0.01" value="0">
    <output id="o-min">0.00</output></label>
  <label>to <input type="range" id="f-max" min="0" max="1" step="0.01" value="1">
    <output id="o-max">1.00</output></label>
  <button type="button" id="f-reset">reset</button>
  <span id="shown" class="shown"></span>
</form>
<main id="cards">{"".join(cards)}</main>
<script>{_JS}</script>
</body></html>
"""


def write_errors_page(
    path: Path, report: EvalReport, errors: Sequence[Misclassified], *, sort: str = "confidence"
) -> PageResult:
    """Render `errors` (already sorted and cut) as cards and write the page atomically."""
    picture = ClipPicture()
    low = report.low_confidence_threshold
    cards, missing = [], []
    try:
        for rank, err in enumerate(errors, 1):
            try:
                samples = read_wav(Path(err.audio_filepath))
            except DataError:
                missing.append(err.audio_filepath)
                cards.append(_card(rank, err, low, None, None))
                continue
            cards.append(
                _card(
                    rank,
                    err,
                    low,
                    _data_uri("image/png", picture.png(samples)),
                    _data_uri("audio/wav", wav_bytes(samples)),
                )
            )
    finally:
        picture.close()
    name = Path(report.manifest).name or "evaluation"
    page = render_page(report, cards, sort=sort, title=f"kws errors: {name}")
    write_text_atomic(Path(path), page)
    return PageResult(Path(path), len(cards), missing)


# ---------------------------------------------------------------- stream evaluations


@dataclass(frozen=True)
class StreamCard:
    """A false accept or a missed event of a stream evaluation, with the audio around it."""

    kind: str  # false accept, duplicate, substitution or miss
    label: str  # the event's label ("none": the detection lies on no event)
    detected: str  # the detected label ("missed" for a miss)
    time_s: float  # the detection's time, or the missed event's start
    end_s: float | None  # the missed event's end
    score: float  # the detection's score, or the best score of the missed event's label near it
    audio_filepath: str
    excerpt: np.ndarray | None  # int16 samples around it; None when the recording cannot be read
    excerpt_start_s: float


def stream_card(rank: int, card: StreamCard, picture: ClipPicture) -> str:
    """One card of a stream evaluation's errors page (`document` puts them on the page)."""
    e = html.escape
    when = f"{card.time_s:.2f} s" if card.end_s is None else f"{card.time_s:.2f}-{card.end_s:.2f} s"
    where = f"at {when} of {card.audio_filepath}"
    media = '<p class="missing">audio file not found or unreadable</p>'
    if card.excerpt is not None:
        start, end = card.excerpt_start_s, card.excerpt_start_s + len(card.excerpt) / SAMPLE_RATE
        where = f"at {when} of {card.audio_filepath} (audio: {start:.2f}-{end:.2f} s)"
        png, wav = picture.png(card.excerpt), wav_bytes(card.excerpt)
        media = (
            f'<img class="pic" alt="waveform and log-mel around {when}" src="{_data_uri("image/png", png)}">'
            f'<audio controls preload="metadata" src="{_data_uri("audio/wav", wav)}"></audio>'
        )
    return f"""
<article class="card" data-true="{e(card.label)}" data-pred="{e(card.detected)}" data-conf="{card.score:.6f}">
  <header><span class="rank">#{rank}</span> <span class="note">{e(card.kind)}</span>
    <span class="true-lbl">{e(card.label)}</span> <span class="arrow">&rarr;</span>
    <span class="pred-lbl">{e(card.detected)}</span>
    <span class="conf" title="smoothed score">{card.score:.1%}</span></header>
  {media}
  <p class="path">{e(where)}</p>
</article>"""


_CSS = """
:root { --fg:#1d232a; --muted:#5f6b76; --line:#dde3e8; --bg:#f5f7f9; --true:#1e7b34; --pred:#b3261e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 16px 20px 40px; font: 14px/1.4 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 20px; margin: 4px 0 12px; } h2 { font-size: 15px; margin: 0 0 6px; }
.summary { display: flex; flex-wrap: wrap; gap: 24px; background: #fff; border: 1px solid var(--line);
  border-radius: 8px; padding: 14px 18px; }
.summary dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 14px; margin: 0;
  flex: 1 1 420px; align-content: start; }
.summary dt { color: var(--muted); } .summary dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 2px 10px; border-bottom: 1px solid var(--line); text-align: left; }
td.num { text-align: right; }
button { font: inherit; font-size: 12px; padding: 1px 8px; border: 1px solid #b8c2cc; border-radius: 4px;
  background: #fff; cursor: pointer; } button:hover { background: #eef3f8; }
.filters { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; align-items: center;
  gap: 8px 18px;
  margin: 14px 0; padding: 10px 14px; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
.filters output { display: inline-block; width: 3em; font-variant-numeric: tabular-nums; }
.shown { margin-left: auto; color: var(--muted); }
#cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
.card header { display: flex; align-items: baseline; gap: 6px; font-size: 15px; margin-bottom: 6px; }
.rank { color: var(--muted); font-size: 12px; } .arrow { color: var(--muted); }
.true-lbl { color: var(--true); font-weight: 600; } .pred-lbl { color: var(--pred); font-weight: 600; }
.note { color: var(--muted); font-size: 12px; }
.conf { margin-left: auto; font-variant-numeric: tabular-nums; font-size: 13px; padding: 0 6px;
  border-radius: 10px; background: #eef1f4; } .conf.low { background: #fde8c8; }
.pic { display: block; width: 100%; height: auto; border-radius: 4px; }
audio { width: 100%; height: 32px; margin-top: 6px; }
.topk { list-style: none; margin: 6px 0 0; padding: 0; font-size: 12px; }
.topk li { display: grid; grid-template-columns: 7em 1fr 4em; align-items: center; gap: 6px; }
.topk .lbl.true { color: var(--true); font-weight: 600; }
.bar { height: 7px; background: #edf0f3; border-radius: 4px; overflow: hidden; }
.bar span { display: block; height: 100%; background: #6b8fb3; }
.pct { text-align: right; font-variant-numeric: tabular-nums; }
.path { margin: 6px 0 0; font: 11px/1.3 ui-monospace, monospace; color: var(--muted);
  overflow-wrap: anywhere; }
.missing { color: var(--pred); }
"""

_JS = """
(function () {
  const $ = (id) => document.getElementById(id);
  const cards = Array.from(document.querySelectorAll('.card'));
  function apply() {
    const t = $('f-true').value, p = $('f-pred').value;
    let lo = parseFloat($('f-min').value), hi = parseFloat($('f-max').value);
    if (lo > hi) { [lo, hi] = [hi, lo]; }
    $('o-min').value = lo.toFixed(2); $('o-max').value = hi.toFixed(2);
    let shown = 0;
    for (const c of cards) {
      const conf = parseFloat(c.dataset.conf);
      const ok = (!t || c.dataset.true === t) && (!p || c.dataset.pred === p)
        && conf >= lo - 1e-9 && conf <= hi + 1e-9;
      c.hidden = !ok;
      if (ok) shown += 1;
    }
    $('shown').textContent = 'showing ' + shown + ' of ' + cards.length + ' errors';
  }
  function setSelect(id, value) {
    const s = $(id);
    s.value = Array.from(s.options).some((o) => o.value === value) ? value : '';
  }
  for (const id of ['f-true', 'f-pred', 'f-min', 'f-max']) { $(id).addEventListener('input', apply); }
  $('f-reset').addEventListener('click', () => {
    $('f-true').value = ''; $('f-pred').value = ''; $('f-min').value = 0; $('f-max').value = 1; apply();
  });
  for (const b of document.querySelectorAll('button.pair')) {
    b.addEventListener('click', () => {
      setSelect('f-true', b.dataset.true); setSelect('f-pred', b.dataset.pred); apply();
      $('filters').scrollIntoView({ behavior: 'smooth' });
    });
  }
  // Only one clip plays at a time.
  document.addEventListener('play', (ev) => {
    for (const a of document.querySelectorAll('audio')) { if (a !== ev.target) a.pause(); }
  }, true);
  apply();
})();
"""
