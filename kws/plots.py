"""Pictures: matplotlib without a display, without warnings on the console, saved atomically."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kws.files import atomic_path


@contextlib.contextmanager
def quiet_plotting() -> Iterator[None]:
    """Silence matplotlib while a figure is laid out and saved: a label whose glyphs the font lacks (a TTS
    word in another script) would print `<source path>: UserWarning: Glyph ... missing from font(s)` lines
    in the middle of kws's output, and font lookups log `findfont: ...`. The PNG is written the same (the
    glyph drawn as a box). Also a decorator: `@quiet_plotting()`."""
    logger = logging.getLogger("matplotlib")
    level = logger.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from (current )?font")
        warnings.filterwarnings("ignore", module=r"matplotlib\.")
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: training and evaluation run on servers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: float | None = None) -> None:
    """Write `fig` as a PNG at `path` (atomically) and free it."""
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
