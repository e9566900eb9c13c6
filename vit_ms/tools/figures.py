"""Headless matplotlib for every picture vit_ms writes: the Agg backend (no display needed), atomic saves.

    plt = pyplot()                      # UserError naming the package when matplotlib is missing
    fig, ax = plt.subplots()
    save_figure(fig, run_dir / "curves.png")
"""
import os
from pathlib import Path

from ..errors import UserError


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    try:
        import matplotlib
    except ImportError as err:
        raise UserError("drawing pictures (curves.png, confusion.png, attention maps) needs the matplotlib "
                        "package: pip install matplotlib (it is in requirements.txt)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: os.PathLike, dpi: int = 100) -> Path:
    """Write `fig` as PNG to `path` through a temporary file (a reader never sees half a picture); closes it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, path)
    finally:
        pyplot().close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
