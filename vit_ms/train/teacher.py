"""The distillation teacher named by `distill.teacher`, built for forward passes in the run's precision.

    teacher = build_teacher(cfg, plan, cache_dir)     # None when distill.type is none

| distill.teacher                     | what is built                                                    |
|-------------------------------------|------------------------------------------------------------------|
| runs/x/best.ckpt (train.py's)       | the ViT its recorded config describes, with its best weights     |
|                                     | (raw or EMA, whichever scored best_top1)                         |
| a PRETRAINED name, a weights file   | the ViT its shapes describe (vit_ms.weights: any source format)  |
| mindcv:<model>                      | mindcv's model, with distill.teacher_weights (path or URL) or    |
|                                     | mindcv's own published weights                                   |

A ViT teacher runs at the student's image size (its position embedding resampled when it was trained at
another) in the student's formulation; every teacher must predict the student's classes.
"""
import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional

import mindspore as ms
import numpy as np

from ..config import Config, config_from_dict
from ..errors import CheckpointError, ConfigError, suggest
from ..models import apply_amp
from ..models.vit import VisionTransformer
from ..variants import architecture, resolve_architecture
from ..weights.fit import infer_architecture
from ..weights.hub import PRETRAINED, resolve_pretrained
from ..weights.load import fit_weights, model_param_shapes, read_weights
from .checkpoint import model_weights, read_checkpoint, read_meta, train_state
from .ema import ema_weights, has_ema

log = logging.getLogger("vit_ms")
MINDCV_PREFIX = "mindcv:"


def build_teacher(cfg: Config, plan, cache_dir: Optional[Path] = None, mindcv_weights: bool = True):
    """The teacher network in inference mode, cast to the plan's amp level; None without distillation.
    `mindcv_weights` False: a mindcv teacher keeps its random initialisation (the benchmark: speed only)."""
    if cfg.distill.type == "none":
        return None
    spec = cfg.distill.teacher
    if spec.startswith(MINDCV_PREFIX) and not mindcv_weights:
        import mindcv.models  # slow import, only for mindcv teachers

        network = mindcv.models.create_model(spec[len(MINDCV_PREFIX):], num_classes=plan.arch.num_classes)
    elif spec.startswith(MINDCV_PREFIX):
        network = mindcv_teacher(spec[len(MINDCV_PREFIX):], cfg.distill.teacher_weights, plan.arch.num_classes,
                                 cache_dir)
    else:
        network = vit_teacher(spec, plan, cache_dir)
    network.set_train(False)
    return apply_amp(network, plan)


def _checkpoint_config(spec: str):
    """(config, params) of one of our training checkpoints, or (None, None) for anything else."""
    path = Path(spec)
    if spec in PRETRAINED or path.suffix.lower() != ".ckpt" or not path.is_file():
        return None, None
    params = read_checkpoint(path)
    config = read_meta(params).config
    return (config_from_dict(config), params) if config is not None else (None, None)


def _best_weights(params: dict) -> dict:
    weights = model_weights(params)
    if train_state(params).best_weights == "ema" and has_ema(params):
        weights = ema_weights(params, weights)
    return {k: v.asnumpy() for k, v in weights.items()}


def _published_architecture(state: dict, overrides: dict, spec: str):
    a = infer_architecture(state)
    if a["variant"] is None:
        raise CheckpointError(f"distill.teacher '{spec}' is a ViT with patch {a['patch_size']}, width "
                              f"{a['embed_dim']}, depth {a['depth']}, which matches no variant in "
                              f"vit_ms/variants.py (its number of heads is unknown); train or convert it with vit_ms "
                              f"first and give that checkpoint")
    pool = dict(global_pool="avg", fc_norm=True) if a["fc_norm"] else {}
    return architecture(a["variant"], num_classes=a["num_classes"], image_size=a["image_size"],
                        mlp_ratio=a["mlp_ratio"], representation_size=a["representation_size"],
                        distilled=a["distilled"], **pool, **overrides)


def vit_teacher(spec: str, plan, cache_dir: Optional[Path] = None):
    """A ViT teacher from one of our checkpoints or published weights, at the student's image size."""
    config, params = _checkpoint_config(spec)
    if config is not None:
        arch, state = resolve_architecture(config.model), _best_weights(params)
    else:
        weights = read_weights(spec, cache_dir=cache_dir)
        overrides = {k: v for k, v in weights.model_overrides.items() if k in ("gelu", "norm_eps")}
        arch, state = _published_architecture(weights.state, overrides, spec), weights.state
    student = plan.arch
    if arch.num_classes != student.num_classes:
        raise ConfigError(f"distill.teacher '{spec}' predicts {arch.num_classes} classes but the student has "
                          f"model.num_classes={student.num_classes}; distillation compares the two class by "
                          f"class, so give a teacher trained (or fine-tuned) on the student's classes")
    arch = replace(arch, image_size=student.image_size, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    network = VisionTransformer(arch, plan.formulation)
    shapes = model_param_shapes(network)
    state, notes, _ = fit_weights(state, shapes)
    for param in network.get_parameters():
        param.set_data(ms.Tensor(np.ascontiguousarray(state[param.name]), dtype=param.dtype))
    log.info("distill.teacher: %s (%s, %d blocks, width %d%s)%s", spec, arch.name, arch.depth, arch.embed_dim,
             ", distilled" if arch.distilled else "", "; " + "; ".join(notes) if notes else "")
    return network


def mindcv_teacher(name: str, weights: str, num_classes: int, cache_dir: Optional[Path] = None):
    """mindcv's `name` with `weights` (a .ckpt path or URL, downloaded into the cache), or mindcv's own published
    weights when `weights` is empty."""
    import mindcv.models  # a runtime dependency, imported only when a mindcv teacher is asked for (it is slow)

    if not mindcv.models.is_model(name):
        known = mindcv.models.list_models()
        raise ConfigError(f"distill.teacher 'mindcv:{name}' is not a mindcv model{suggest(name, known)}; see "
                          f"mindcv.models.list_models() for the {len(known)} names")
    if not weights:
        if not mindcv.models.is_model_pretrained(name):
            raise ConfigError(f"mindcv publishes no weights for '{name}' in this version; set distill.teacher_weights "
                              f"to a MindSpore checkpoint of it (a path or URL)")
        if num_classes != 1000:
            raise ConfigError(f"mindcv's published '{name}' predicts the 1000 ImageNet classes but the student has "
                              f"model.num_classes={num_classes}; set distill.teacher_weights to a checkpoint trained "
                              f"on the student's classes")
        network = mindcv.models.create_model(name, num_classes=1000, pretrained=True)
        log.info("distill.teacher: mindcv %s with mindcv's published weights", name)
        return network
    path = resolve_pretrained(weights, cache_dir)
    network = mindcv.models.create_model(name, num_classes=num_classes)
    try:
        params = ms.load_checkpoint(str(path))
        missing, _ = ms.load_param_into_net(network, params)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"distill.teacher_weights '{weights}' do not fit mindcv's '{name}' with "
                              f"{num_classes} classes ({str(err).strip().splitlines()[-1]}); check the model name and "
                              f"that the checkpoint predicts the student's model.num_classes") from err
    if missing:
        raise CheckpointError(f"distill.teacher_weights '{weights}' lack {len(missing)} parameters of mindcv's "
                              f"'{name}' (e.g. {', '.join(missing[:4])}); is it a checkpoint of that model?")
    log.info("distill.teacher: mindcv %s with weights from %s", name, path)
    return network
