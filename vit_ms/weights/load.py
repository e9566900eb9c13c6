"""Loading published or converted weights into our model: one pipeline for training, inference and the converter.

    weights = read_weights("vit_b16.augreg_in21k_ft_in1k")        # file / URL / name -> our names, numpy
    state, notes, reinit = fit_weights(weights.state, shapes)     # head and pos_embed fitted, strict key check
    report = load_pretrained(model, "vit_b16.augreg_in21k_ft_in1k")   # both, into a model
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore.common.initializer import TruncatedNormal, initializer

from ..errors import UserError
from .fit import Shapes, adapt_to_model, check_fit
from .hub import PRETRAINED, resolve_pretrained
from .sources import SOURCE_FORMATS, SOURCE_OVERRIDES, State, convert_state, detect_format, read_state, \
    strip_optimizer_state
from .verify import check_layout, check_source_format

log = logging.getLogger("vit_ms")
PathLike = Union[str, os.PathLike]


@dataclass
class Weights:
    """Weights read from a source and renamed to ours, with what the source implies about the model."""
    path: Path
    source_format: str
    state: State
    ignored_optimizer_state: int  # optimizer / resume entries left out
    model_overrides: Dict[str, object]  # model.* the source needs for its exact outputs (gelu, norm_eps)


def read_weights(spec: str, *, source_format: str = "auto", sha256: str = "", cache_dir: Optional[PathLike] = None,
                 progress: bool = True) -> Weights:
    """Resolve `spec` (file, URL or PRETRAINED name) to a file, read it, strip optimizer state, rename to ours.

    A given format (`source_format`, or the PRETRAINED table's) must agree with the file's key names and the
    renamed tensors must have our layout (`vit_ms.weights.verify`); CheckpointError naming the format the file
    looks like otherwise.
    """
    path = resolve_pretrained(spec, cache_dir, sha256=sha256, progress=progress)
    state, recorded = read_state(path)
    if source_format == "auto":
        source_format = PRETRAINED[spec].source_format if spec in PRETRAINED else detect_format(state, path.suffix)
    if source_format not in SOURCE_FORMATS:
        raise UserError(f"source_format='{source_format}' is unknown; use auto or one of {', '.join(SOURCE_FORMATS)}")
    check_source_format(state, path.suffix.lower(), source_format, path)
    state, ignored = strip_optimizer_state(state)
    converted = convert_state(source_format, state)
    check_layout(converted, source_format, path)
    return Weights(path, source_format, converted, ignored, {**SOURCE_OVERRIDES[source_format], **recorded})


def fit_weights(state: State, shapes: Shapes) -> Tuple[State, List[str], List[str]]:
    """Fit renamed weights to a model's parameter shapes: drop / re-initialise a head of another size, resample
    pos_embed, then the strict check. Returns (state, notes for the user, keys the model initialises itself)."""
    state, notes, reinit = adapt_to_model(state, shapes)
    check_fit(shapes, state, allow_missing=reinit)
    return state, notes, reinit


@dataclass
class LoadReport:
    """What `load_pretrained` did: the file, its format, and every change it made to fit the model."""
    path: Path
    source_format: str
    loaded: int  # tensors copied into the model
    notes: List[str] = field(default_factory=list)  # head dropped / re-initialised, pos_embed resampled
    head_reinitialised: bool = False
    pos_embed_resampled: bool = False
    ignored_optimizer_state: int = 0
    model_overrides: Dict[str, object] = field(default_factory=dict)  # model.* the source needs for parity
    mismatched_overrides: Dict[str, Tuple[object, object]] = field(default_factory=dict)  # key: (model, source)

    def __str__(self) -> str:
        parts = [f"{self.loaded} tensors from {self.path} ({self.source_format})", *self.notes]
        if self.ignored_optimizer_state:
            parts.append(f"ignored {self.ignored_optimizer_state} optimizer-state entries")
        for key, (have, want) in self.mismatched_overrides.items():
            parts.append(f"model.{key}={have} but these weights were trained with model.{key}={want}: set it "
                         f"for exact outputs")
        return "; ".join(parts)


def model_param_shapes(model) -> Shapes:
    return {p.name: tuple(p.shape) for p in model.get_parameters()}


def load_pretrained(model, spec: str, *, sha256: str = "", source_format: str = "auto",
                    cache_dir: Optional[PathLike] = None, progress: bool = True) -> LoadReport:
    """Load published or converted weights into `model` (a vit_ms VisionTransformer), strictly.

    A head of another size is dropped and re-initialised, a position embedding of another grid is resampled
    (bicubic); every other difference raises CheckpointError naming the keys and the option that fixes them.
    """
    weights = read_weights(spec, source_format=source_format, sha256=sha256, cache_dir=cache_dir, progress=progress)
    shapes = model_param_shapes(model)
    resampled = "pos_embed" in weights.state and tuple(weights.state["pos_embed"].shape) != shapes.get("pos_embed")
    state, notes, reinit = fit_weights(weights.state, shapes)
    for param in model.get_parameters():
        if param.name in state:
            param.set_data(_tensor(state[param.name], param.dtype))
    if "head.weight" in reinit:  # a fresh fc_norm keeps its initialisation (ones, zeros)
        _reinit_head(model)
    settings = {"gelu": model.arch.gelu, "norm_eps": model.arch.norm_eps,
                "representation_size": model.arch.representation_size}
    implied = weights.model_overrides
    mismatched = {k: (settings[k], v) for k, v in implied.items() if k in settings and settings[k] != v}
    for key, (have, want) in mismatched.items():
        log.warning("pretrained weights %s were trained with model.%s=%s; this model has %s (set model.%s=%s "
                    "for the source's exact outputs)", weights.path.name, key, want, have, key, want)
    return LoadReport(weights.path, weights.source_format, len(state), notes, "head.weight" in reinit, resampled,
                      weights.ignored_optimizer_state, implied, mismatched)


def _tensor(array: np.ndarray, dtype):
    return ms.Tensor(np.ascontiguousarray(array), dtype=dtype)


def _reinit_head(model) -> None:
    """The head's initialisation in vit_ms.models.layers.Linear: truncated normal (std 0.02), zero bias."""
    model.head.weight.set_data(initializer(TruncatedNormal(0.02), model.head.weight.shape, model.head.weight.dtype))
    model.head.bias.set_data(initializer("zeros", model.head.bias.shape, model.head.bias.dtype))
