"""Reading published ViT weights and renaming them to ours: pure functions over dicts of numpy arrays.

Each `convert_*` takes a state dict in its source's naming and returns one in ours (see vit_ms/models/vit.py).
Keys a converter does not know pass through unchanged, so the strict check (`check_fit`) names them.

| format   | where it comes from                                     | file                          |
|----------|---------------------------------------------------------|-------------------------------|
| timm     | timm / Hugging Face hub `vit_*_patch*_*` (and our own)  | model.safetensors             |
| npz      | Google's ViT / AugReg release (Flax)                    | *.npz                         |
| mindcv   | mindcv 0.3 `mindcv.models.vit`                          | *.ckpt                        |
| tutorial | MindSpore's ViT tutorial / mindvision `vit_b_16_224`    | *.ckpt                        |
| vit_ms   | checkpoints this package wrote (train.py, the converter)| *.ckpt                        |

The sources differ in more than names: Flax's `nn.gelu` is the tanh approximation, and MindSpore's
`nn.GELU()` / `nn.LayerNorm` default to tanh GELU and eps 1e-7. `SOURCE_OVERRIDES` lists the
`model.*` settings that reproduce each source's function exactly.
"""
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Tuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from ..errors import CheckpointError

State = Dict[str, np.ndarray]

SOURCE_FORMATS = ("timm", "npz", "mindcv", "tutorial", "vit_ms")

# model.* settings under which our ViT computes exactly what the source's own code computes.
SOURCE_OVERRIDES = {
    "timm": {},  # nn.GELU() (erf), LayerNorm eps 1e-6: our defaults
    "npz": {"gelu": "tanh"},  # flax.linen.gelu defaults to approximate=True; LayerNorm eps 1e-6
    "mindcv": {"gelu": "tanh", "norm_eps": 1e-7},  # mindspore nn.GELU() and nn.LayerNorm defaults
    "tutorial": {"gelu": "tanh", "norm_eps": 1e-7},  # same cells as mindcv
    "vit_ms": {},  # a converted file records its own (see METADATA_KEY)
}

# Entries in a train-network checkpoint that are optimizer or loss-scale state, not model weights.
# learning_rate_group_<n>: per-group lr tables (layer decay); ema.: the EMA of the weights (vit_ms.train.ema),
# read only when asked for (inference --weights ema).
OPTIMIZER_STATE_PREFIXES = ("adam_m.", "adam_v.", "moment1.", "moment2.", "accum.", "stat.", "learning_rate_group_",
                            "ema.")
OPTIMIZER_STATE_KEYS = ("global_step", "learning_rate", "momentum", "beta1_power", "beta2_power", "scale_sense",
                        "current_iterator_step", "last_overflow_iterator_step", "epoch_num", "step_num")

# String entry a converted .ckpt carries: JSON of the model.* overrides its source needs.
METADATA_KEY = "vit_ms_model_overrides"


def is_optimizer_state(key: str) -> bool:
    return key in OPTIMIZER_STATE_KEYS or key.startswith(OPTIMIZER_STATE_PREFIXES) or key.startswith("vit_ms_")


def strip_optimizer_state(state: State) -> Tuple[State, int]:
    """Drop optimizer / loss-scale / resume entries; returns the weights and how many entries were dropped."""
    kept = {k: v for k, v in state.items() if not is_optimizer_state(k)}
    return kept, len(state) - len(kept)


# ----------------------------------------------------------------------------------------------------------
# Files -> dicts of arrays (no pickle: .pth/.bin files are refused).


def read_state(path: Path) -> Tuple[State, dict]:
    """Read a weights file into ({name: float32 array}, model overrides recorded in the file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return _float32(load_file(str(path))), {}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _float32({k: npz[k] for k in npz.files}), {}
        if suffix == ".ckpt":
            return _read_ckpt(path)
    except (OSError, ValueError, RuntimeError, SafetensorError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(f"weights file '{path}' ({path.stat().st_size} bytes) is truncated, corrupt or not a "
                              f"{suffix} file ({err}); download or copy it again (a partial download is the usual "
                              f"cause)") from err
    if suffix in (".pth", ".pt", ".bin", ".pkl"):
        raise CheckpointError(f"'{path}' is a PyTorch pickle, which vit_ms does not read (unpickling can run "
                              f"code). Use the model.safetensors of the same weights from the Hugging Face hub "
                              f"(https://huggingface.co/timm/<model name>), or re-save it where torch is "
                              f"installed: safetensors.torch.save_file(torch.load(f), 'model.safetensors')")
    raise CheckpointError(f"'{path}' has an unknown file type '{suffix}'; expected .safetensors (timm / Hugging "
                          f"Face), .npz (Google ViT / AugReg) or .ckpt (MindSpore: mindcv, tutorial, vit_ms)")


def _read_ckpt(path: Path) -> Tuple[State, dict]:
    import mindspore as ms  # seconds to import: python -m vit_ms.convert reads this module before parsing

    params = ms.load_checkpoint(str(path))
    state = {k: v.asnumpy() for k, v in params.items() if not isinstance(v, str)}
    overrides = json.loads(params[METADATA_KEY]) if isinstance(params.get(METADATA_KEY), str) else {}
    return _float32(state), overrides


def _float32(state: State) -> State:
    return {k: (v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v) for k, v in state.items()}


def detect_format(keys: Iterable[str], suffix: str = "") -> str:
    """Which source a state dict comes from, judged by its key names (and file suffix for our own files)."""
    keys = [k for k in keys if not is_optimizer_state(k)]
    if any("Transformer/encoderblock_" in k or k.endswith("embedding/kernel") for k in keys):
        return "npz"
    if any(".transformer.layers." in f".{k}" or "patch_embedding.conv." in k for k in keys):
        return "tutorial"
    if any(re.search(r"(^|\.)norm\d?\.(gamma|beta)$", k) for k in keys):
        return "mindcv"
    if "patch_embed.proj.weight" in keys or any(k.startswith("blocks.") for k in keys):
        return "vit_ms" if suffix == ".ckpt" else "timm"
    sample = ", ".join(sorted(keys)[:6])
    raise CheckpointError(f"cannot tell which ViT these weights come from (first keys: {sample}); pass the "
                          f"format explicitly (--from / source_format=) as one of {', '.join(SOURCE_FORMATS)}")


# ----------------------------------------------------------------------------------------------------------
# Converters.


def convert_timm(state: State) -> State:
    """timm / Hugging Face names are ours already (`fc_norm.*` too: model.global_pool=avg, model.fc_norm=true)."""
    return dict(state)


def convert_npz(state: State) -> State:
    """Google ViT / AugReg Flax names and layouts -> ours (cf. timm's `_load_weights`)."""
    prefix = "opt/target/" if "opt/target/embedding/kernel" in state else ""
    if prefix:  # a training snapshot: keep the parameters, not the optimizer slots
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if "cls" not in state and "embedding/kernel" in state:
        raise CheckpointError("these npz weights have no class token (a 'gap' classifier); this ViT needs one")
    out, used = {}, set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CheckpointError(f"npz weights lack '{prefix}{key}'; is this a ViT checkpoint of "
                                  f"google-research/vision_transformer?")
        used.add(key)
        return state[key]

    out["patch_embed.proj.weight"] = take("embedding/kernel").transpose(3, 2, 0, 1)  # (P,P,C,D) -> (D,C,P,P)
    out["patch_embed.proj.bias"] = take("embedding/bias")
    out["cls_token"] = take("cls")  # (1, 1, D)
    out["pos_embed"] = take("Transformer/posembed_input/pos_embedding")  # (1, N+1, D)
    depth = len({m.group(1) for k in state for m in [re.match(r"Transformer/encoderblock_(\d+)/", k)] if m})
    for i in range(depth):
        src, dst = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        attn = src + "MultiHeadDotProductAttention_1/"
        for ln, norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
            out[f"{dst}{norm}.weight"] = take(f"{src}{ln}/scale")
            out[f"{dst}{norm}.bias"] = take(f"{src}{ln}/bias")
        kernels = [take(f"{attn}{n}/kernel") for n in ("query", "key", "value")]  # (D, heads, head_dim) each
        out[f"{dst}attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])  # (3D, D)
        out[f"{dst}attn.qkv.bias"] = np.concatenate([take(f"{attn}{n}/bias").reshape(-1)  # (heads, head_dim)
                                                     for n in ("query", "key", "value")])
        out_kernel = take(f"{attn}out/kernel")  # (heads, head_dim, D)
        out[f"{dst}attn.proj.weight"] = out_kernel.reshape(-1, out_kernel.shape[-1]).T  # (D, D)
        out[f"{dst}attn.proj.bias"] = take(f"{attn}out/bias")
        for r in range(2):
            out[f"{dst}mlp.fc{r + 1}.weight"] = take(f"{src}MlpBlock_3/Dense_{r}/kernel").T  # (in, out) -> (out, in)
            out[f"{dst}mlp.fc{r + 1}.bias"] = take(f"{src}MlpBlock_3/Dense_{r}/bias")
    out["norm.weight"] = take("Transformer/encoder_norm/scale")
    out["norm.bias"] = take("Transformer/encoder_norm/bias")
    for src, dst in (("pre_logits", "pre_logits.fc"), ("head", "head")):
        if f"{src}/kernel" in state:
            out[f"{dst}.weight"] = take(f"{src}/kernel").T
            out[f"{dst}.bias"] = take(f"{src}/bias")
    out.update({k: v for k, v in state.items() if k not in used})  # unknown keys: reported by check_fit
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


_MINDCV_NORM = re.compile(r"^((?:.+\.)?norm\d?)\.(gamma|beta)$")  # norm1 / norm2 / norm (nn.LayerNorm)


def convert_mindcv(state: State) -> State:
    """mindcv 0.3 `VisionTransformer`: timm names except LayerNorm gamma/beta."""
    def rename(key: str) -> str:
        m = _MINDCV_NORM.match(key)
        return f"{m.group(1)}.{'weight' if m.group(2) == 'gamma' else 'bias'}" if m else key

    return convert_timm({rename(k): v for k, v in state.items()})


_TUTORIAL_BLOCK = {  # transformer.layers.{i}.<sub> -> blocks.{i}.<ours>
    "0.cell.0.gamma": "norm1.weight", "0.cell.0.beta": "norm1.bias",
    "0.cell.1.qkv.weight": "attn.qkv.weight", "0.cell.1.qkv.bias": "attn.qkv.bias",
    "0.cell.1.out.weight": "attn.proj.weight", "0.cell.1.out.bias": "attn.proj.bias",
    "1.cell.0.gamma": "norm2.weight", "1.cell.0.beta": "norm2.bias",
    "1.cell.1.dense1.weight": "mlp.fc1.weight", "1.cell.1.dense1.bias": "mlp.fc1.bias",
    "1.cell.1.dense2.weight": "mlp.fc2.weight", "1.cell.1.dense2.bias": "mlp.fc2.bias",
}
_TUTORIAL_TOP = {
    "patch_embedding.conv.weight": "patch_embed.proj.weight", "patch_embedding.conv.bias": "patch_embed.proj.bias",
    "cls": "cls_token", "cls_token": "cls_token", "pos_embedding": "pos_embed",
    "norm.gamma": "norm.weight", "norm.beta": "norm.bias",
    "dense.weight": "head.weight", "dense.bias": "head.bias",  # vit_b_16_224.ckpt
    "head.dense.weight": "head.weight", "head.dense.bias": "head.bias",  # mindvision's other ViT files
}


def convert_tutorial(state: State) -> State:
    """The MindSpore ViT tutorial's `ViT` cell (and mindvision's, with its 'backbone.' prefix) -> ours."""
    out = {}
    for key, value in state.items():
        name = key[len("backbone."):] if key.startswith("backbone.") else key
        block = re.match(r"transformer\.layers\.(\d+)\.(.+)$", name)
        if block and block.group(2) in _TUTORIAL_BLOCK:
            out[f"blocks.{block.group(1)}.{_TUTORIAL_BLOCK[block.group(2)]}"] = value
        else:
            out[_TUTORIAL_TOP.get(name, key)] = value
    return out


CONVERTERS = {"timm": convert_timm, "npz": convert_npz, "mindcv": convert_mindcv, "tutorial": convert_tutorial,
              "vit_ms": convert_timm}


def convert_state(source_format: str, state: State) -> State:
    """Rename `state` (optimizer state already stripped: `strip_optimizer_state`) from `source_format` to ours."""
    if source_format not in CONVERTERS:
        raise CheckpointError(f"unknown weights format '{source_format}'; expected one of {', '.join(CONVERTERS)}")
    return CONVERTERS[source_format](state)


def save_state(state: State, path: Path, model_overrides: dict, order: Iterable[str] = ()) -> None:
    """Write `state` as a MindSpore checkpoint atomically (temp file, then rename), recording the
    `model_overrides` its source needs under METADATA_KEY."""
    import mindspore as ms  # as in _read_ckpt: loaded only when a .ckpt is read or written

    path = Path(path)
    if path.suffix != ".ckpt":
        raise CheckpointError(f"output '{path}' must end in .ckpt (MindSpore appends it otherwise)")
    names = [k for k in order if k in state] + sorted(k for k in state if k not in set(order))
    tmp = path.with_name(f".{path.stem}.partial.ckpt")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ms.save_checkpoint([{"name": k, "data": ms.Tensor(state[k])} for k in names], str(tmp),
                           append_dict={METADATA_KEY: json.dumps(model_overrides, sort_keys=True)})
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write '{path}': {err}; check the folder exists, is writable and "
                              f"has free space") from err
