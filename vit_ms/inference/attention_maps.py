"""Where the class token looks: attention rollout and the last layer's class-token attention, per image.

    probs = [p.asnumpy() for p in network.attention_probabilities(ms.Tensor(x))]   # depth x (B, H, N+1, N+1)
    rollout = attention_rollout(probs)                     # (B, N+1, N+1)
    maps = class_token_map(rollout, grid)                  # (B, h, w): what the class token gathers, per patch

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): per layer the
heads are averaged, the identity is added for the residual connection, rows are renormalised to sum to 1,
and the layers are multiplied, the first layer rightmost. The class token's row, without its own column,
says how much each patch contributes to the token the head reads. `write_attention_maps` saves, per image, a
PNG with the image, the rollout overlay and the last layer's class-token attention overlay side by side.
Needs a checkpoint (the model's own attention); the network runs eagerly (PyNative).
"""
import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from PIL import Image

from ..data import load_image_rgb, preprocess_eval
from ..errors import DataError
from ..figures.attention import save_attention_figure
from .predict import softmax

log = logging.getLogger("vit_ms")


def attention_rollout(probs: Sequence[np.ndarray]) -> np.ndarray:
    """depth x (B, H, N, N) attention probabilities -> (B, N, N) rollout."""
    rollout = None
    for layer in probs:
        a = np.asarray(layer, np.float64).mean(axis=1)  # (B, N, N): heads averaged
        a = a + np.eye(a.shape[-1])  # the residual connection
        a = a / a.sum(axis=-1, keepdims=True)  # rows sum to 1 again
        rollout = a if rollout is None else a @ rollout  # (B, N, N)
    return rollout


def class_token_map(attention: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """(B, N+1, N+1) token-to-token weights -> (B, h, w): the class token's row over the patches."""
    return attention[:, 0, 1:].reshape(attention.shape[0], *grid)


def last_layer_map(last: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """The last block's (B, H, N+1, N+1) probabilities -> (B, h, w) class-token attention, heads averaged."""
    return class_token_map(np.asarray(last, np.float64).mean(axis=1), grid)


def to_image_size(grid_map: np.ndarray, size: int) -> np.ndarray:
    """(h, w) patch weights -> (size, size) in [0, 1] (min-max scaled, bilinear)."""
    low, high = float(grid_map.min()), float(grid_map.max())
    scaled = (grid_map - low) / (high - low) if high > low else np.zeros_like(grid_map)
    resized = Image.fromarray(scaled.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
    return np.clip(np.asarray(resized, np.float64), 0.0, 1.0)  # (S, S)


def maps_for_batch(network, x: np.ndarray, patch_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (B, 3, S, S) -> rollout maps (B, S, S), last-layer maps (B, S, S), logits (B, classes)."""
    tensor = ms.Tensor(x)
    probs = [p.asnumpy() for p in network.attention_probabilities(tensor)]
    logits = network(tensor).asnumpy()
    return maps_from_probabilities(probs, x.shape[-1], patch_size) + (logits,)


def maps_from_probabilities(probs: Sequence[np.ndarray], size: int, patch_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """depth x (B, H, N+1, N+1) attention probabilities of (B, 3, size, size) images -> rollout maps (B, S, S) and
    last-layer maps (B, S, S), each in [0, 1]."""
    grid = (size // patch_size, size // patch_size)
    rollout = class_token_map(attention_rollout(probs), grid)
    last = last_layer_map(probs[-1], grid)
    return np.stack([to_image_size(m, size) for m in rollout]), np.stack([to_image_size(m, size) for m in last])


def displayable(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A preprocessed (3, S, S) image back to (S, S, 3) uint8 (the crop the model saw)."""
    image = x.transpose(1, 2, 0) * np.asarray(std) + np.asarray(mean)  # (S, S, 3), 0-255 scale
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def output_names(paths: Sequence[Path]) -> List[str]:
    """`<stem>.png` per image, `<stem>_<n>.png` when stems repeat (val/1/0017.png and val/7/0017.png)."""
    seen: dict = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        names.append(f"{path.stem}.png" if count == 0 else f"{path.stem}_{count}.png")
    return names


def write_attention_maps(network, cfg, paths: Sequence[Path], out_dir: Path, class_names: Sequence[str],
                         batch_size: int = 16,
                         on_skip: Optional[Callable[[Path, DataError], None]] = None) -> List[Path]:
    """Save one PNG per readable image in `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    readable: List[Tuple[Path, np.ndarray]] = []
    for path in paths:
        try:
            readable.append((path, preprocess_eval(load_image_rgb(path, cfg.data.max_image_pixels), cfg.data,
                                                   cfg.model.image_size)))
        except DataError as err:
            if cfg.data.on_bad_image == "error" or on_skip is None:
                raise
            on_skip(path, err)
    written = []
    names = output_names([p for p, _ in readable])
    for start in range(0, len(readable), batch_size):
        chunk = readable[start:start + batch_size]
        x = np.stack([a for _, a in chunk]).astype(np.float32)  # (b, 3, S, S)
        rollout, last, logits = maps_for_batch(network, x, network.arch.patch_size)
        probs = softmax(logits)  # (b, classes)
        for i, (path, array) in enumerate(chunk):
            top = int(probs[i].argmax())
            target = out_dir / names[start + i]
            save_attention_figure(displayable(array, cfg.data.mean, cfg.data.std), rollout[i], last[i], target,
                                  f"{path.name}: {class_names[top]} ({probs[i, top]:.2f})")
            written.append(target)
    return written
