"""Headless matplotlib for every picture vit_ms writes: figures drawn by the Agg renderer without pyplot
(no display, no global figure registry, so a background thread may draw), saved atomically.

    fig = new_figure(figsize=(8, 6))    # UserError naming the package when matplotlib is missing
    ax = fig.subplots()
    save_figure(fig, run_dir / "curves.png")
"""
import os
from pathlib import Path

from ..errors import UserError
from ..fs import atomic_writer


def matplotlib_module():
    try:
        import matplotlib  # optional at import time: a missing package becomes the UserError below
    except ImportError as err:
        raise UserError("drawing pictures (curves.png, confusion.png, attention maps) needs the matplotlib "
                        "package: pip install matplotlib (it is in requirements.txt)") from err
    return matplotlib


def new_figure(**kwargs):
    """A `matplotlib.figure.Figure` on the Agg canvas (kwargs: figsize, ...)."""
    matplotlib_module()  # the clear error first; then matplotlib's pieces, loaded only when a figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: os.PathLike, dpi: int = 100) -> Path:
    """Write `fig` as PNG to `path` atomically (vit_ms.fs), so a reader never sees half a picture."""
    path = Path(path)
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return path
