"""Checking that weights are what the user says they are, before their format decides anything.

The source format picks the renaming and the `model.*` settings (GELU, LayerNorm eps) that reproduce the
source's outputs, so a wrong `--from` would load silently and give wrong logits. Two checks:
- `check_source_format`: the file's key names (and, for our own files, the file type) must be the claimed
  format's; `detect_format` is the judge, and a mismatch names the format the file looks like.
- `check_layout`: after renaming, every tensor must have the shape our ViT stores it in (torch/MindSpore
  layouts: Linear (out, in), conv (out, in, kh, kw)); a transposed or foreign layout is named by key.
"""
import re
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np

from ..errors import CheckpointError
from .sources import detect_format, is_optimizer_state

# What each format's key names look like: a pattern that finds an example in the file, and words for it.
EVIDENCE = {
    "timm": (r"^blocks\.\d+\.norm1\.weight$|^patch_embed\.proj\.weight$",
             "timm names with LayerNorm weight/bias in a .safetensors or .npz file"),
    "vit_ms": (r"^blocks\.\d+\.norm1\.weight$|^patch_embed\.proj\.weight$",
               "our names with LayerNorm weight/bias in a MindSpore .ckpt (as train.py and vit_ms.convert write)"),
    "mindcv": (r"(^|\.)norm\d?\.(gamma|beta)$",
               "timm-style names with MindSpore LayerNorm gamma/beta (mindcv's cells)"),
    "tutorial": (r"(^|\.)transformer\.layers\.|patch_embedding\.conv\.",
                 "'transformer.layers.<i>' and 'patch_embedding.conv' names (MindSpore's ViT tutorial)"),
    "npz": (r"Transformer/encoderblock_|embedding/kernel$",
            "Flax names under 'Transformer/encoderblock_<i>/' and 'embedding/kernel' (Google ViT / AugReg)"),
}


def _example(keys: Iterable[str], fmt: str) -> Optional[str]:
    pattern = re.compile(EVIDENCE[fmt][0])
    return next((k for k in sorted(keys) if pattern.search(k)), None)


def check_source_format(keys: Iterable[str], suffix: str, claimed: str, path: Path) -> None:
    """Raise CheckpointError unless a file of type `suffix` with these keys looks like `claimed` weights."""
    keys = [k for k in keys if not is_optimizer_state(k)]
    try:
        looks = detect_format(keys, suffix)
    except CheckpointError:
        sample = ", ".join(sorted(keys)[:4]) or "none"
        raise CheckpointError(f"'{path}' does not look like {claimed} weights, which have {EVIDENCE[claimed][1]}, "
                              f"nor like any other format vit_ms reads (first keys: {sample}); check that --src "
                              f"is a ViT checkpoint") from None
    if looks == claimed:
        return
    example = _example(keys, looks)
    raise CheckpointError(f"'{path}' was given as {claimed} weights but looks like {looks} weights: it has "
                          f"{EVIDENCE[looks][1]}" + (f", e.g. '{example}'" if example else "") +
                          f"; {claimed} weights would have {EVIDENCE[claimed][1]}. The format decides the renaming "
                          f"and the model.gelu / model.norm_eps settings that reproduce the source, so a wrong one "
                          f"gives wrong outputs: use --from {looks} (or --from auto)")


# Shapes of our parameters in terms of the width D, the MLP width H and free sizes (None).
_BLOCK_SHAPES = {
    "norm1.weight": ("D",), "norm1.bias": ("D",), "norm2.weight": ("D",), "norm2.bias": ("D",),
    "attn.qkv.weight": ("3D", "D"), "attn.qkv.bias": ("3D",), "attn.proj.weight": ("D", "D"),
    "attn.proj.bias": ("D",), "mlp.fc1.weight": ("H", "D"), "mlp.fc1.bias": ("H",),
    "mlp.fc2.weight": ("D", "H"), "mlp.fc2.bias": ("D",),
}
_TOP_SHAPES = {"cls_token": (1, 1, "D"), "dist_token": (1, 1, "D"), "pos_embed": (1, None, "D"), "norm.weight": ("D",), "norm.bias": ("D",)}


def _expected(spec: Tuple, width: int, hidden: Optional[int]) -> Tuple:
    sizes = {"D": width, "3D": 3 * width, "H": hidden}
    return tuple(sizes[s] if isinstance(s, str) else s for s in spec)


def _matches(shape: Tuple, want: Tuple) -> bool:
    return len(shape) == len(want) and all(w is None or s == w for s, w in zip(shape, want))


def check_layout(state: Dict[str, np.ndarray], claimed: str, path: Path) -> None:
    """Raise CheckpointError naming the first renamed tensor whose shape is not our ViT's layout."""
    proj = state.get("patch_embed.proj.weight")
    if proj is None:
        return  # infer_architecture / check_fit name the missing key
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"'{path}' read as {claimed} weights: the patch embedding has shape {proj.shape}, "
                              f"not (width, channels, patch, patch); the file is not in the {claimed} layout")
    width = int(proj.shape[0])  # (D, C, P, P)
    for key, value in state.items():
        block = re.match(r"(blocks\.\d+\.)(.+)$", key)
        spec = _BLOCK_SHAPES.get(block.group(2)) if block else _TOP_SHAPES.get(key)
        if spec is None:
            continue  # heads, pre-logits and unknown keys: fitted or named by check_fit
        fc1 = state.get(f"{block.group(1)}mlp.fc1.weight") if block else None
        want = _expected(spec, width, int(fc1.shape[0]) if fc1 is not None and fc1.ndim == 2 else None)
        if not _matches(tuple(value.shape), want):
            shown = "(" + ", ".join("any" if w is None else str(w) for w in want) + ")"
            raise CheckpointError(f"'{path}' read as {claimed} weights: '{key}' has shape {tuple(value.shape)}, "
                                  f"but a ViT of width {width} (from the patch embedding) stores it as {shown}; the "
                                  f"file is not in the {claimed} layout (a transposed export?) or not a plain ViT")
