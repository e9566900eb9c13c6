"""confusion.png: the confusion matrix as a picture, readable for 10 classes and for 1,000.

Colours are row-normalised (the share of a true class's images predicted as each class). Up to
`LABELLED_MAX` classes every cell is drawn with its count and every class is named. Beyond that the classes
are sorted by top-1 (worst first, on both axes) and drawn as a heat map on a log colour scale (empty cells
white), so the classes that need attention sit in the top-left corner; the worst few are named below it.
"""
import os
from typing import Sequence

import numpy as np

from .canvas import matplotlib_module, new_figure, save_figure

LABELLED_MAX = 30  # classes drawn with names and counts in every cell
NAMED_WORST = 10  # rows named on a large sorted heat map


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """(C, C) counts -> (C, C) shares of each row; a row without images stays 0."""
    totals = confusion.sum(axis=1, keepdims=True)  # (C, 1)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: os.PathLike, title: str = "") -> None:
    confusion = np.asarray(confusion)
    shares = row_normalised(confusion)
    c = len(class_names)
    if c <= LABELLED_MAX:
        size = 4 + 0.35 * c
        fig = new_figure(figsize=(size + 1, size))
        ax = fig.subplots()
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for i in range(c):
            for j in range(c):
                if confusion[i, j]:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8 if c <= 15 else 6,
                            color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(c), labels=list(class_names), rotation=90 if c > 10 else 0)
        ax.set_yticks(range(c), labels=list(class_names))
    else:
        top1 = np.diag(shares)  # (C,)
        order = np.argsort(top1, kind="stable")  # worst first
        fig = new_figure(figsize=(9, 9))
        ax = fig.subplots()
        from matplotlib.colors import LogNorm  # matplotlib loads when drawing, after matplotlib_module's check

        sorted_shares = np.ma.masked_equal(shares[np.ix_(order, order)], 0)  # zero cells drawn white
        floor = 1.0 / max(int(confusion.sum(axis=1).max()), 1)  # the smallest non-zero share
        cmap = matplotlib_module().colormaps["magma_r"].with_extremes(bad="white")
        image = ax.imshow(sorted_shares, cmap=cmap, interpolation="nearest", norm=LogNorm(vmin=floor, vmax=1))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"predicted class ({c} classes, both axes sorted by top-1, worst first)")
        worst = ", ".join(f"{class_names[i]} {top1[i] * 100:.0f}%" for i in order[:NAMED_WORST])
        fig.text(0.02, 0.01, f"worst: {worst}", fontsize=8, wrap=True)
    ax.set_ylabel("true class")
    if c <= LABELLED_MAX:
        ax.set_xlabel("predicted class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    ax.set_title(title or f"confusion matrix ({int(confusion.sum())} images)")
    fig.tight_layout()
    save_figure(fig, path)
