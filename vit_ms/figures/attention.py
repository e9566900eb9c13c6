"""One attention-map picture: the image, the rollout overlay and the last layer's class-token overlay."""
import os

import numpy as np

from .canvas import new_figure, save_figure


def save_attention_figure(image: np.ndarray, rollout: np.ndarray, last: np.ndarray, path: os.PathLike,
                          title: str = "") -> None:
    """image: (S, S, 3) uint8; rollout, last: (S, S) in [0, 1]."""
    fig = new_figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 3)
    panels = (("image (as the model sees it)", None), ("attention rollout", rollout),
              ("last layer, class token", last))
    for ax, (name, weights) in zip(axes, panels):
        ax.imshow(image, interpolation="nearest")
        if weights is not None:
            ax.imshow(weights, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=0.82, wspace=0.04)
    save_figure(fig, path)
