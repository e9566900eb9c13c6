"""Our own checkpoints, read: the file, what it records about its run, and which of its weights to use.

    params = read_checkpoint("runs/demo/best.ckpt")    # {name: Tensor or metadata str}; CheckpointError if unusable
    meta = read_meta(params)                           # config, plan, class names, trained heads (None: not recorded)
    weights = chosen_weights(params, "ema", where)     # model weights: raw, their EMA, or (None) the recorded best

A checkpoint written by train.py holds the train network's parameters (model, optimizer, loss scale, and with
train.ema the float32 averages `ema.<name>` and `ema.num_updates`), its resume state (`vit_ms_epoch`, ...,
`vit_ms_best_weights`: "raw" or "ema", whichever scored best) and its metadata as JSON strings: the resolved
config, the run plan, the class names and the heads the run trained (`META_KEYS`). Writing them (atomically,
with the resume state) is vit_ms.train.checkpoint; a distillation teacher's parameters, named under
`TEACHER_PREFIX` inside the train step, are never written.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import mindspore as ms

from ..errors import CheckpointError, UserError
from .fit import check_fit as check_state_fit
from .sources import is_optimizer_state

META_KEYS = {"config": "vit_ms_config", "plan": "vit_ms_plan", "class_names": "vit_ms_classes",
             "trained_heads": "vit_ms_trained_heads"}
BEST_WEIGHTS_KEY = "vit_ms_best_weights"
TEACHER_PREFIX = "distill_teacher."  # a distillation teacher's parameters inside the train step
EMA_PREFIX = "ema."  # ema.<name>: the moving average of <name> (vit_ms.train.ema)
EMA_COUNT_KEY = "ema.num_updates"
WEIGHTS = ("raw", "ema")
CLASS_HEAD, DIST_HEAD = "head", "head_dist"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its run; each is None in files written before it was recorded."""
    config: Optional[dict] = None  # the resolved config (vit_ms.config.config_to_dict)
    plan: Optional[dict] = None  # RunPlan.to_dict()
    class_names: Optional[List[str]] = None
    trained_heads: Optional[List[str]] = None  # None when written: derived from `config` (`heads_trained_by`)

    def entries(self) -> Dict[str, str]:
        """The `append_dict` entries of these values (JSON strings); the trained heads follow from the config."""
        values = {"config": self.config, "plan": self.plan, "class_names": self.class_names,
                  "trained_heads": self.trained_heads if self.trained_heads is not None or self.config is None
                  else heads_trained_by(self.config)}
        return {key: json.dumps(values[field]) for field, key in META_KEYS.items() if values[field] is not None}


def heads_trained_by(config: dict) -> List[str]:
    """The heads a run with `config` trains: the class head, and a distilled model's `head_dist` only when a
    teacher taught it (distill.type hard or soft; DeiT trains the class head alone without one)."""
    distilled = bool(config.get("model", {}).get("distilled"))
    taught = config.get("distill", {}).get("type", "none") != "none"
    return [CLASS_HEAD, DIST_HEAD] if distilled and taught else [CLASS_HEAD]


def read_checkpoint(path: os.PathLike) -> Dict[str, object]:
    """Load a checkpoint file into a dict, raising CheckpointError naming the file if it is missing or corrupt."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory; give a .ckpt file inside it, e.g. "
                              f"'{path / 'last.ckpt'}' (or --resume auto with the run's output_dir)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    if path.suffix.lower() in (".mindir", ".onnx"):
        raise CheckpointError(f"'{path}' is an exported {path.suffix[1:].upper()} file, not a training checkpoint: "
                              f"it holds no optimizer state and cannot be resumed or fine-tuned from. Give the .ckpt "
                              f"it was exported from (infer.py --model runs it)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): it was not written completely")
    try:
        return ms.load_checkpoint(str(path), crc_check=True)
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or truncated and cannot be read ({err}); "
                              f"use an earlier checkpoint of the run (or --resume auto)") from err


def read_meta(params: Dict[str, object]) -> CheckpointMeta:
    """The config, plan, class names and trained heads a checkpoint records (None for what it lacks; the heads of
    a checkpoint that records a config but no heads follow from that config)."""
    values = {}
    for field, key in META_KEYS.items():
        raw = params.get(key)
        values[field] = json.loads(raw) if isinstance(raw, str) else None
    if values["trained_heads"] is None and values["config"] is not None:
        values["trained_heads"] = heads_trained_by(values["config"])
    return CheckpointMeta(**values)


def recorded(params: Dict[str, object], key: str, default):
    """The scalar a checkpoint records under `key` (a resume-state entry), or `default`."""
    return params[key].asnumpy().item() if key in params else default


def best_weights(params: Dict[str, object]) -> str:
    """Which weights scored the checkpoint's best top-1: "raw" or "ema" ("raw" when it does not say)."""
    value = params.get(BEST_WEIGHTS_KEY)
    return value if isinstance(value, str) else "raw"


def is_model_key(name: str) -> bool:
    """False for optimizer, loss-scale, resume-state and metadata entries of a training checkpoint."""
    return not is_optimizer_state(name)


def model_weights(params: Dict[str, object]) -> Dict[str, object]:
    """The model parameters of a checkpoint dict (no optimizer, resume or metadata entries)."""
    return {k: v for k, v in params.items() if is_model_key(k) and not isinstance(v, str)}


def network_params(params: Dict[str, object]) -> Dict[str, object]:
    """Every parameter entry of a checkpoint dict (model and optimizer), without the metadata strings."""
    return {k: v for k, v in params.items() if not isinstance(v, str)}


def has_ema(params: Dict[str, object]) -> bool:
    """True when a checkpoint dict holds EMA weights."""
    return EMA_COUNT_KEY in params


def ema_weights(params: Dict[str, object], weights: Dict[str, object]) -> Dict[str, object]:
    """`weights` with every parameter the checkpoint keeps an EMA of replaced by that EMA."""
    averaged = {k[len(EMA_PREFIX):]: v for k, v in params.items() if k.startswith(EMA_PREFIX) and k != EMA_COUNT_KEY}
    return {k: averaged.get(k, v) for k, v in weights.items()}


def chosen_weights(params: Dict[str, object], weights: Optional[str], where: str) -> Dict[str, object]:
    """The model weights of the checkpoint `where` (for messages): "raw", their EMA ("ema", train.ema), or None:
    the ones it records as best."""
    if weights not in (None, *WEIGHTS):
        raise UserError(f"--weights must be one of {', '.join(WEIGHTS)}, got '{weights}'")
    raw = model_weights(params)
    if (weights or best_weights(params)) == "raw":
        return raw
    if not has_ema(params):
        raise CheckpointError(f"checkpoint '{where}' holds no EMA weights (it was trained without train.ema); use "
                              f"--weights raw")
    return ema_weights(params, raw)


def check_fit(model: ms.nn.Cell, params: Dict[str, object], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming `source`, the missing/unexpected/mis-shaped keys and the option that fixes them."""
    try:
        check_state_fit({p.name: tuple(p.shape) for p in model.get_parameters()}, network_params(params))
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from None
