"""Fitting converted weights to a model: architecture from shapes, position-embedding resampling, the strict
key check. Pure functions over dicts of numpy arrays and of shapes.
"""
import math
import re
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from ..errors import CheckpointError
from ..variants import VARIANTS
from .sources import State, is_optimizer_state

Shapes = Dict[str, Tuple[int, ...]]


def infer_architecture(state: State) -> dict:
    """What the weights record about the model (in our names): patch size, width, depth, classes, image size...

    `variant` is the name in VARIANTS with the same patch size, width and depth, or None. The number of heads
    is not recorded by any shape of a fused-qkv ViT; it comes from that variant.
    """
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise CheckpointError(f"the weights have no '{key}', so they are not a ViT this package can load")
    embed_dim, in_channels, patch_size, _ = state["patch_embed.proj.weight"].shape  # (D, C, P, P)
    depth = 1 + max(int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m)
    distilled = "dist_token" in state  # DeiT's distilled ViT: class and distillation tokens before the patches
    grid = _square_grid(state["pos_embed"].shape[1] - (2 if distilled else 1))
    arch = dict(patch_size=int(patch_size), embed_dim=int(embed_dim), depth=depth, in_channels=int(in_channels),
                mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim, image_size=grid * int(patch_size),
                num_classes=int(state["head.weight"].shape[0]) if "head.weight" in state else 0,
                representation_size=(int(state["pre_logits.fc.weight"].shape[0])
                                     if "pre_logits.fc.weight" in state else None),
                distilled=distilled,
                fc_norm="fc_norm.weight" in state)  # timm/MAE: LayerNorm after the average pool (global_pool avg)
    arch["variant"] = next((name for name, v in VARIANTS.items()
                            if (v["patch_size"], v["embed_dim"], v["depth"]) == (patch_size, embed_dim, depth)), None)
    return arch


def _square_grid(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise CheckpointError(f"the position embedding has {num_patches} patch positions, not a square grid; "
                              f"only square grids can be resampled")
    return side


# ----------------------------------------------------------------------------------------------------------
# Bicubic resampling of the position-embedding grid (as torch's F.interpolate(mode="bicubic",
# align_corners=False), cubic coefficient -0.75, edges clamped), written as two small matrices.


def _cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix that resamples a length-n_in signal to n_out points; identity when equal."""
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5  # pixel centres, align_corners=False
    base = np.floor(src).astype(int)
    m = np.zeros((n_out, n_in))
    for tap in range(-1, 3):
        idx = np.clip(base + tap, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), _cubic(src - (base + tap)))
    return m


def resample_pos_embed(pos: np.ndarray, new_grid: Sequence[int], num_prefix_tokens: int = 1) -> np.ndarray:
    """Resample a (1, prefix + h*w, D) position embedding to `new_grid` (h', w'), bicubic on the patch grid.

    The prefix (class token) rows are copied untouched; an unchanged grid is returned exactly.
    """
    if pos.ndim != 3 or pos.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, D), got {pos.shape}")
    prefix, grid = pos[:, :num_prefix_tokens], pos[0, num_prefix_tokens:]
    side = _square_grid(grid.shape[0])
    new_h, new_w = (int(n) for n in new_grid)
    if (new_h, new_w) == (side, side):
        return pos.copy()
    grid = grid.reshape(side, side, -1).astype(np.float64)  # (h, w, D)
    out = np.einsum("ih,jw,hwd->ijd", bicubic_matrix(side, new_h), bicubic_matrix(side, new_w), grid)
    out = out.reshape(1, new_h * new_w, -1).astype(pos.dtype)
    return np.concatenate([prefix, out], axis=1)


# ----------------------------------------------------------------------------------------------------------
# Making a converted state fit a model, and the strict check.


def adapt_to_model(state: State, model_shapes: Shapes) -> Tuple[State, List[str], List[str]]:
    """Drop a head for another number of classes and resample pos_embed to the model's grid.

    A model with fc_norm given weights with a final norm instead (an MAE pre-trained encoder) drops that norm and
    keeps its fresh fc_norm. Returns (state, notes for the user, keys the model may lack in the state: the head
    to re-initialise, a fresh fc_norm).
    """
    state, notes, reinit = dict(state), [], []
    _match_distillation_token(state, model_shapes, notes)
    head, wanted = state.get("head.weight"), model_shapes.get("head.weight")
    heads = ("head.weight", "head.bias") + (("head_dist.weight", "head_dist.bias") if "head_dist.weight" in model_shapes
                                           else ())
    if head is not None and (wanted is None or wanted[0] != head.shape[0]):  # another number of classes
        for key in ("head.weight", "head.bias", "head_dist.weight", "head_dist.bias"):
            state.pop(key, None)
        if wanted is None:
            notes.append(f"dropped the checkpoint's {head.shape[0]}-class head: the model has no head")
        else:
            reinit = list(heads)
            notes.append(f"dropped the checkpoint's {head.shape[0]}-class head; the model's {wanted[0]}-class "
                         f"head{'s are' if len(heads) > 2 else ' is'} freshly initialised")
        if "pre_logits.fc.weight" in state and "pre_logits.fc.weight" not in model_shapes:
            state.pop("pre_logits.fc.weight"), state.pop("pre_logits.fc.bias", None)
            notes.append("dropped the checkpoint's pre-logits layer with its head (model.representation_size "
                         "is unset), as timm does for fine-tuning")
    elif head is None and "head.weight" in model_shapes:
        reinit = list(heads)
        notes.append("the weights have no classifier head; the model's head is freshly initialised")
    if "fc_norm.weight" in model_shapes and "fc_norm.weight" not in state and "norm.weight" in state \
            and "norm.weight" not in model_shapes:  # MAE fine-tuning: the pre-training norm gives way to fc_norm
        state.pop("norm.weight"), state.pop("norm.bias", None)
        reinit += ["fc_norm.weight", "fc_norm.bias"]
        notes.append("dropped the checkpoint's final norm; the model's fc_norm (after average pooling) starts "
                     "fresh, as MAE fine-tuning does")
    pos, wanted = state.get("pos_embed"), model_shapes.get("pos_embed")
    prefix = 2 if "dist_token" in model_shapes else 1  # class (+ distillation) token rows
    if pos is not None and wanted is not None and pos.shape != wanted and pos.shape[2] == wanted[2] \
            and ("dist_token" in state) == (prefix == 2):  # a token mismatch is named by check_fit
        old, new = _square_grid(pos.shape[1] - prefix), _square_grid(wanted[1] - prefix)
        state["pos_embed"] = resample_pos_embed(pos, (new, new), num_prefix_tokens=prefix)
        notes.append(f"resampled the position embedding from a {old}x{old} to a {new}x{new} patch grid (bicubic)")
    return state, notes, reinit


def _match_distillation_token(state: State, model_shapes: Shapes, notes: List[str]) -> None:
    """Plain ViT weights into a distilled model: the distillation token, its position row and head_dist start as
    copies of the class token's (DeiT distillation during fine-tuning); distilled weights into a plain model:
    the distillation token, its position row and head_dist are dropped. In place."""
    model_distilled, weights_distilled = "dist_token" in model_shapes, "dist_token" in state
    pos = state.get("pos_embed")
    if model_distilled == weights_distilled or pos is None or "cls_token" not in state:
        return
    if model_distilled:
        state["dist_token"] = state["cls_token"].copy()
        state["pos_embed"] = np.concatenate([pos[:, :1], pos], axis=1)  # (1, 2+N, D): class row twice
        if "head.weight" in state:
            state["head_dist.weight"], state["head_dist.bias"] = state["head.weight"].copy(), state["head.bias"].copy()
        notes.append("the weights have no distillation token: dist_token, its position embedding and head_dist "
                     "start as copies of the class token's")
    else:
        state.pop("dist_token"), state.pop("head_dist.weight", None), state.pop("head_dist.bias", None)
        state["pos_embed"] = np.concatenate([pos[:, :1], pos[:, 2:]], axis=1)  # (1, 1+N, D)
        notes.append("dropped the weights' distillation token, its position embedding and head_dist (the model "
                     "is not distilled: set model.distilled=true to keep them)")


def check_fit(model_params: Shapes, state: State, allow_missing: Iterable[str] = ()) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys, and the option that fixes each.

    Optimizer / loss-scale entries (`OPTIMIZER_STATE_KEYS`, `OPTIMIZER_STATE_PREFIXES`) are ignored;
    `allow_missing` names model parameters the caller initialises itself (a re-initialised head).
    """
    given = {k: tuple(v.shape) for k, v in state.items() if not is_optimizer_state(k)}
    wanted = {k: tuple(v) for k, v in model_params.items()}
    missing = sorted(set(wanted) - set(given) - set(allow_missing))
    unexpected = sorted(set(given) - set(wanted))
    mismatched = sorted(k for k in set(wanted) & set(given) if wanted[k] != given[k])
    if not (missing or unexpected or mismatched):
        return
    lines = ["the weights do not fit the model:"]
    if missing:
        lines.append(f"  missing from the weights ({len(missing)}): {_names(missing)}")
    if unexpected:
        lines.append(f"  unexpected in the weights ({len(unexpected)}): {_names(unexpected)}")
    for key in mismatched[:10]:
        lines.append(f"  shape mismatch: {key}: weights {given[key]} vs model {wanted[key]}")
    lines.append("to fix: " + "; ".join(_hints(given, wanted, state, missing, unexpected, mismatched)))
    raise CheckpointError("\n".join(lines))


def _names(keys: List[str], limit: int = 10) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _grid_hint(given: Shapes, wanted: Shapes) -> str:
    """What a position-embedding mismatch asks for: another model.patch_size when the weights cover the model's
    image with other patches, else the image size the weights' grid means with this model's patch size."""
    grid = math.isqrt(given["pos_embed"][1] - (2 if "dist_token" in given else 1))
    patch = wanted.get("patch_embed.proj.weight", (0, 0, 0))[2]
    weights_patch = given.get("patch_embed.proj.weight", (0, 0, patch))[2]
    image = math.isqrt(wanted["pos_embed"][1] - (2 if "dist_token" in wanted else 1)) * patch  # the model's model.image_size
    if weights_patch != patch and grid * weights_patch == image:
        return (f"the weights cut the same {image} px image into {weights_patch}-pixel patches ({grid}x{grid}): set "
                f"model.patch_size={weights_patch} (or pick the model.name with patch {weights_patch})")
    return (f"the weights' position embedding is a {grid}x{grid} grid: set model.image_size={grid * patch} "
            f"(this run has {image}), or load through model.pretrained / vit_ms.convert, which resample it")


def _hints(given: Shapes, wanted: Shapes, state: State, missing, unexpected, mismatched) -> List[str]:
    hints, touched = [], set(missing) | set(unexpected) | set(mismatched)
    arch = _describe(state)
    if any(k.startswith(("blocks.", "patch_embed.", "norm.", "cls_token")) for k in touched):
        hints.append(f"the weights are {arch}: pick that model.name (or set model.patch_size / embed_dim / depth "
                     f"/ num_heads / mlp_ratio to match; --model on the converter)")
    if "head.bias" in mismatched or ("head.weight" in mismatched and "head.bias" not in given):
        hints.append(f"set model.num_classes={given['head.weight'][0]} (--num-classes) to keep the head, or load "
                     f"through model.pretrained / vit_ms.convert, which drop a head of another size")
    elif "head.weight" in mismatched:
        hints.append(f"the head reads {given['head.weight'][1]} features: set model.representation_size to match "
                     f"(null for none) or pick the model.name of that width")
    if "head.weight" in missing and "head.weight" not in given:
        hints.append("the weights have no classifier head: load them through model.pretrained (the head is "
                     "then initialised), or set model.num_classes to the head they were saved with")
    if "dist_token" in unexpected:
        hints.append("the weights are DeiT's distilled ViT (a distillation token and head_dist): set "
                     "model.distilled=true")
    elif "dist_token" in missing:
        hints.append("the weights have no distillation token: set model.distilled=false, or load them through "
                     "model.pretrained to start a distilled model from a plain ViT")
    if "pos_embed" in mismatched and not ({"dist_token"} & (set(missing) | set(unexpected))):
        hints.append(_grid_hint(given, wanted))
    if "pre_logits.fc.weight" in unexpected:
        hints.append(f"set model.representation_size={given['pre_logits.fc.weight'][0]} (the weights have a "
                     f"pre-logits layer), or change model.num_classes so it is dropped with the head")
    if "pre_logits.fc.weight" in missing:
        hints.append("set model.representation_size=null (the weights have no pre-logits layer)")
    if "fc_norm.weight" in unexpected:
        hints.append("the weights normalise after average pooling (timm/MAE fc_norm): set model.global_pool=avg "
                     "and model.fc_norm=true")
    if "fc_norm.weight" in missing:
        hints.append("the weights have a final norm, not fc_norm: set model.fc_norm=false")
    if "pre_logits.fc.weight" in mismatched:
        hints.append(f"set model.representation_size={given['pre_logits.fc.weight'][0]}")
    odd = [k for k in unexpected if k != "dist_token" and
           not k.startswith(("blocks.", "head.", "head_dist.", "pre_logits.", "norm.", "fc_norm.", "patch_embed."))]
    if odd:
        hints.append(f"{_names(odd, 3)} are not parts of this ViT: if these are not our names, convert the "
                     f"weights first (python -m vit_ms.convert --from timm|npz|mindcv|tutorial)")
    return hints or ["check model.name and the model.* options against the run that wrote the weights"]


def _describe(state: State) -> str:
    try:
        a = infer_architecture(state)
    except CheckpointError:
        return "not a ViT of known shape"
    named = f"model.name={a['variant']}" if a["variant"] else "no variant in VARIANTS"
    return (f"a ViT with patch {a['patch_size']}, width {a['embed_dim']}, depth {a['depth']}, "
            f"mlp_ratio {a['mlp_ratio']:g} ({named})")
