"""One way to build a model for inference, used by eval.py, infer.py, the exporter and the benchmark.

    source = open_weights("runs/demo/best.ckpt")                 # our checkpoint, a published name, a file
    cfg = inference_config(source, config_path=None, overrides=["data.root=/data/val"])
    plan = resolve_plan(cfg, setup_runtime(cfg), purpose="inference")
    network = inference_network(plan, source)                    # weights loaded, eval mode, amp applied

`weights` picks, in a checkpoint trained with train.ema, the raw weights or their moving average ("raw" or
"ema"; None: what the checkpoint records as its best, `vit_ms_best_weights`).

A checkpoint written by train.py carries its config, plan and class names, so it is enough on its own;
published weights (a vit_ms.weights.hub.PRETRAINED name, a URL, a .safetensors/.npz/.ckpt file) take their
config from the weights table or from --config. Exported MindIR/ONNX files run through `exported_runner.py`.
"""
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mindspore as ms

from ..config import Config, apply_overrides, config_from_dict, load_config
from ..data.folder import read_class_names
from ..errors import CheckpointError, UserError
from ..models import apply_amp, model_from_plan
from ..plan import RunPlan, resolve_plan
from ..runtime import setup_runtime
from ..train.checkpoint import check_fit, model_weights, read_checkpoint, read_meta, train_state
from ..train.ema import ema_weights, has_ema
from ..weights.hub import PRETRAINED
from ..weights.load import load_pretrained
from ..weights.sources import detect_format


@dataclass
class WeightsSource:
    """Where inference weights come from: one of our checkpoints (with its contents) or published weights."""
    spec: str
    params: Optional[Dict[str, object]] = None  # our checkpoint's entries; None for published weights
    config: Optional[dict] = None  # the config the checkpoint records
    class_names: Optional[List[str]] = field(default=None)

    @property
    def is_checkpoint(self) -> bool:
        return self.params is not None


def open_weights(spec: str) -> WeightsSource:
    """Read `spec` when it is one of our training checkpoints (or a converted one); else published weights."""
    path = Path(spec)
    if spec in PRETRAINED or path.suffix.lower() != ".ckpt":
        hub_folder = path.is_dir() and (path / "model.safetensors").is_file()  # --to timm's output
        if (path.is_dir() and not hub_folder) or (path.suffix.lower() in (".mindir", ".onnx")):
            read_checkpoint(path)  # raises the message for a directory or an exported file
        return WeightsSource(spec)
    params = read_checkpoint(path)
    if detect_format([k for k, v in params.items() if not isinstance(v, str)], ".ckpt") != "vit_ms":
        return WeightsSource(spec)  # a mindcv / tutorial checkpoint: converted on load
    meta = read_meta(params)
    names = meta.class_names
    beside = path.parent / "classes.txt"
    if names is None and beside.is_file():
        names = read_class_names(beside)
    return WeightsSource(spec, params, meta.config, names)


def inference_config(source: WeightsSource, config_path: Optional[str] = None,
                     overrides: Sequence[str] = ()) -> Config:
    """The config to rebuild `source`'s model: --config when given, else what the checkpoint or the published
    weights table records; `overrides` apply on top either way."""
    if config_path:
        return load_config(config_path, overrides)
    if source.config is not None:
        return config_from_dict(apply_overrides(copy.deepcopy(source.config), list(overrides)))
    if source.spec in PRETRAINED:
        return config_from_dict(apply_overrides({}, PRETRAINED[source.spec].config_overrides() + list(overrides)))
    raise UserError(f"'{source.spec}' records no config (a checkpoint written before vit_ms stored it, or weights "
                    f"from elsewhere); pass --config, e.g. the run's runs/<name>/config.yaml")


WEIGHTS = ("raw", "ema")


def checkpoint_weights(source: WeightsSource, weights: Optional[str] = None) -> Dict[str, object]:
    """The model weights of checkpoint `source`: raw, or their EMA (train.ema); None: the ones it records as best."""
    if weights not in (None, *WEIGHTS):
        raise UserError(f"--weights must be one of {', '.join(WEIGHTS)}, got '{weights}'")
    chosen = weights or train_state(source.params).best_weights
    raw = model_weights(source.params)
    if chosen == "raw":
        return raw
    if not has_ema(source.params):
        raise CheckpointError(f"checkpoint '{source.spec}' holds no EMA weights (it was trained without "
                              f"train.ema); use --weights raw")
    return ema_weights(source.params, raw)


def inference_network(plan, source: WeightsSource, cache_dir: Optional[os.PathLike] = None,
                      weights: Optional[str] = None):
    """The plan's model with `source`'s weights (strictly: a head that would need re-initialising is an error),
    in eval mode, cast to the plan's amp level; `weights` as in `checkpoint_weights`."""
    model = model_from_plan(plan)
    if source.is_checkpoint:
        check_fit(model, source.params, source=f"checkpoint '{source.spec}'")
        ms.load_param_into_net(model, checkpoint_weights(source, weights), strict_load=True)
    else:
        if weights == "ema":
            raise UserError(f"--weights ema needs one of our training checkpoints; '{source.spec}' is published "
                            f"weights: leave --weights out")
        report = load_pretrained(model, source.spec, cache_dir=cache_dir)
        if report.head_reinitialised:
            raise CheckpointError(f"'{source.spec}' has no {plan.arch.num_classes}-class head for inference "
                                  f"({'; '.join(report.notes)}); fine-tune it first, or set model.num_classes to "
                                  f"the weights' classes")
    model.set_train(False)
    return apply_amp(model, plan)


@dataclass
class InferenceModel:
    """A model ready for inference and what it was built from."""
    source: WeightsSource
    cfg: Config
    plan: RunPlan
    network: object  # mindspore.nn.Cell, eval mode

    @property
    def class_names(self) -> Optional[List[str]]:
        return self.source.class_names


def load_for_inference(spec: str, config_path: Optional[str] = None, overrides: Sequence[str] = (),
                       purpose: str = "inference", check=None, weights: Optional[str] = None) -> InferenceModel:
    """Weights, config, runtime, plan and network in one call; `check(cfg)` may reject the config before the
    network is built (the exporter's format checks); `weights`: "raw", "ema" or None (the checkpoint's best)."""
    source = open_weights(spec)
    cfg = inference_config(source, config_path, overrides)
    if check is not None:
        check(cfg)
    plan = resolve_plan(cfg, setup_runtime(cfg), purpose=purpose)
    return InferenceModel(source, cfg, plan, inference_network(plan, source, weights=weights))
