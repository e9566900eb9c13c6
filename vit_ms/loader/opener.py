"""One way to open a model for use: eval.py, infer.py, python -m vit_ms.export, python -m vit_ms.serve, the
benchmark and the distillation teacher all call `open_model`, always with the download cache.

    opened = open_model("runs/demo/best.ckpt", cache_dir)                 # + config_path, overrides, weights
    opened.network, opened.cfg, opened.plan, opened.class_names, opened.weights
    teacher = open_model(cfg.distill.teacher, cache_dir, teacher_of=Student(plan, class_names)).network

| spec                                  | config (`inference_config`)       | weights                                |
|---------------------------------------|-----------------------------------|----------------------------------------|
| runs/x/best.ckpt (train.py's)         | the one it records                | raw or EMA (`weights`; None: the best) |
| a PRETRAINED name, a file, a URL, a   | the weights table's, or --config  | vit_ms.weights.load_pretrained         |
| converted or mindcv .ckpt, a --to     |                                   | (downloads into `cache_dir`)           |
| timm folder                           |                                   |                                        |
| mindcv:<model>                        | --config, else the defaults       | mindcv's published ones (downloaded    |
|                                       |                                   | into `cache_dir`), or a teacher's      |
|                                       |                                   | distill.teacher_weights                |
| best.mindir, best.onnx (written by    | the sidecar beside it, or         | the graph itself, for a caller that    |
| python -m vit_ms.export)              | --config (`exported`)             | runs graphs (`exported=True`)          |

An exported file holds a graph, not a model to build: it opens with its sidecar and no `network` (run it with
`exported.open_exported_runner`) only for a caller that runs graphs (infer.py --model, the server); for any other
(eval, the exporter, a teacher) open_model refuses it, naming the checkpoint to give instead.

`cache_dir` is where published weights are downloaded: entry scripts pass $VIT_MS_CACHE
(vit_ms.weights.hub.cache_dir_from_env), read once.

A distillation head (`head_dist`) that no teacher trained (the checkpoint's `trained_heads`) is left out of the
predictions: the network answers with its class head alone (`use_trained_heads`).

`teacher_of` opens the model as a distillation teacher of a run (`Student`): at the student's image size (its
position embedding resampled), in the student's plan (formulation, amp), in inference mode. It must predict the
student's classes: a checkpoint of ours records its class names, and they must equal the student's, in order
(refused naming the first difference); published and mindcv weights record none (ImageNet's 1000 classes for the
table's and mindcv's own), so only the number of classes is compared, with a warning.
"""
import copy
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import mindspore as ms
import numpy as np

from ..config import Config
from ..config_loader import apply_overrides, config_from_dict, load_config
from ..data.folder import read_class_names
from ..errors import CheckpointError, ConfigError, UserError, suggest
from ..models import apply_amp, model_from_plan
from ..models.vit import VisionTransformer
from ..plan import RunPlan, resolve_plan
from ..runtime import setup_runtime
from ..variants import architecture, resolve_architecture
from ..weights.checkpoint import (DIST_HEAD, CheckpointMeta, best_weights, check_fit, chosen_weights, read_checkpoint,
                                 read_meta)
from ..weights.fit import infer_architecture
from ..weights.hub import PRETRAINED, resolve_pretrained
from ..weights.load import fit_weights, load_pretrained, model_param_shapes, read_weights
from ..weights.sources import detect_format
from .exported import FORMATS, config_for_export

log = logging.getLogger("vit_ms")
MINDCV_PREFIX = "mindcv:"


@dataclass
class WeightsSource:
    """Where a model's weights come from: one of our checkpoints (with its contents), published weights, or mindcv."""
    spec: str
    kind: str  # "checkpoint" (ours), "published" (table name, file, URL, converted/mindcv .ckpt), "mindcv" or
    # "exported" (a .mindir / .onnx graph)
    params: Optional[Dict[str, object]] = None  # our checkpoint's entries
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)
    class_names: Optional[List[str]] = None  # the checkpoint's (or classes.txt beside it), or the export's sidecar

    @property
    def is_checkpoint(self) -> bool:
        return self.kind == "checkpoint"


def open_weights(spec: str) -> WeightsSource:
    """Read `spec` when it is one of our training checkpoints; else published weights or a mindcv name."""
    if spec.startswith(MINDCV_PREFIX):
        return WeightsSource(spec, "mindcv")
    path = Path(spec)
    if path.suffix.lower() in FORMATS.values():
        return WeightsSource(spec, "exported")
    if spec in PRETRAINED or path.suffix.lower() != ".ckpt":
        hub_folder = path.is_dir() and (path / "model.safetensors").is_file()  # --to timm's output
        if path.is_dir() and not hub_folder:
            read_checkpoint(path)  # raises the message for a directory
        return WeightsSource(spec, "published")
    params = read_checkpoint(path)
    if detect_format([k for k, v in params.items() if not isinstance(v, str)], ".ckpt") != "vit_ms":
        return WeightsSource(spec, "published")  # a mindcv / tutorial checkpoint: converted on load
    meta = read_meta(params)
    names = meta.class_names
    beside = path.parent / "classes.txt"
    if names is None and beside.is_file():
        names = read_class_names(beside)
    return WeightsSource(spec, "checkpoint", params, meta, names)


def inference_config(source: WeightsSource, config_path: Optional[str] = None,
                     overrides: Sequence[str] = ()) -> Config:
    """The config to rebuild `source`'s model: --config when given, else what the checkpoint or the published
    weights table records (a mindcv model: the defaults); `overrides` apply on top either way."""
    if config_path:
        return load_config(config_path, overrides)
    if source.meta.config is not None:
        return config_from_dict(apply_overrides(copy.deepcopy(source.meta.config), list(overrides)), recorded=True)
    if source.spec in PRETRAINED:
        return config_from_dict(apply_overrides({}, PRETRAINED[source.spec].config_overrides() + list(overrides)))
    if source.kind == "mindcv":
        return config_from_dict(apply_overrides({}, list(overrides)))
    raise UserError(f"'{source.spec}' records no config (a checkpoint written before vit_ms stored it, or weights "
                    f"from elsewhere); pass --config, e.g. the run's runs/<name>/config.yaml")


def use_trained_heads(model, heads: Optional[Sequence[str]]) -> None:
    """A distilled ViT whose `head_dist` is not among the trained `heads` predicts with its class head alone
    (None: both were trained, as in DeiT's published weights)."""
    if getattr(model, "distilled", False) and heads is not None and DIST_HEAD not in heads:
        model.average_heads = False
        log.info("model.distilled: head_dist was trained by no teacher; predictions use the class head alone")


@dataclass
class Student:
    """The run a teacher is opened for (`open_model(..., teacher_of=...)`)."""
    plan: RunPlan
    class_names: Optional[List[str]]  # the student's classes, in label order (None: only plan's count is known)
    teacher_weights: str = ""  # distill.teacher_weights: a mindcv teacher's checkpoint (path or URL)
    mindcv_weights: bool = True  # False: a mindcv teacher keeps its initialisation (the benchmark: speed only)


@dataclass
class OpenedModel:
    """A model ready for use and what it was built from."""
    source: WeightsSource
    cfg: Optional[Config]  # the config the model was rebuilt from (None: a teacher known by its shapes, mindcv)
    plan: Optional[RunPlan]  # the plan it runs under (a teacher: the student's; None: an exported graph)
    network: object  # mindspore.nn.Cell in inference mode, the plan's amp applied (None: an exported graph)
    weights: Optional[str] = None  # "raw" or "ema": which weights of our checkpoint were loaded
    sidecar: Optional[dict] = None  # an exported graph's sidecar (image size, preprocessing, batch, classes)

    @property
    def class_names(self) -> Optional[List[str]]:
        return self.source.class_names


def open_model(spec: str, cache_dir: Optional[os.PathLike], *, config_path: Optional[str] = None,
               overrides: Sequence[str] = (), weights: Optional[str] = None, purpose: str = "inference",
               check=None, teacher_of: Optional[Student] = None, exported: bool = False) -> OpenedModel:
    """Open `spec` for use (see the table above); published weights are downloaded into `cache_dir`.

    `weights`: "raw", "ema" or None (the checkpoint's best). `check(cfg)` may reject the config before the
    network is built (the exporter's format checks). `teacher_of`: open it as that run's distillation teacher.
    `exported`: the caller runs exported graphs too (infer.py --model, the server).
    """
    source = open_weights(spec)
    if source.kind == "exported":
        return _open_exported(source, exported and teacher_of is None, config_path, overrides, weights)
    if weights == "ema" and not source.is_checkpoint:
        raise UserError(f"--weights ema needs one of our training checkpoints; '{spec}' is "
                        f"{'a mindcv model' if source.kind == 'mindcv' else 'published weights'}: leave --weights out")
    if teacher_of is not None:
        return _open_teacher(source, teacher_of, cache_dir)
    cfg = inference_config(source, config_path, overrides)
    if check is not None:
        check(cfg)
    plan = resolve_plan(cfg, setup_runtime(cfg), purpose=purpose)
    which = None
    if source.kind == "mindcv":
        model = mindcv_network(spec[len(MINDCV_PREFIX):], "", plan.arch.num_classes, cache_dir)
    else:
        model = model_from_plan(plan)
        if source.is_checkpoint:
            check_fit(model, source.params, source=f"checkpoint '{spec}'")
            which = weights or best_weights(source.params)
            ms.load_param_into_net(model, chosen_weights(source.params, which, spec), strict_load=True)
            use_trained_heads(model, source.meta.trained_heads)
        else:
            report = load_pretrained(model, spec, cache_dir=cache_dir)
            if report.head_reinitialised:
                raise CheckpointError(f"'{spec}' has no {plan.arch.num_classes}-class head for inference "
                                      f"({'; '.join(report.notes)}); fine-tune it first, or set model.num_classes to "
                                      f"the weights' classes")
    model.set_train(False)
    return OpenedModel(source, cfg, plan, apply_amp(model, plan), which)


def _open_exported(source: WeightsSource, runs_graphs: bool, config_path: Optional[str], overrides: Sequence[str],
                   weights: Optional[str]) -> OpenedModel:
    spec = source.spec
    if not runs_graphs:
        raise UserError(f"'{spec}' is an exported {Path(spec).suffix[1:].upper()} graph, not a model to rebuild: "
                        f"run it with infer.py --model {spec} (or python -m vit_ms.serve --ckpt {spec}); everything "
                        f"else takes the .ckpt it was exported from")
    if weights:
        raise UserError("--weights applies to a checkpoint; an exported file holds one set of weights")
    cfg, sidecar = config_for_export(spec, config_path, overrides)
    source.class_names = sidecar.get("class_names")
    return OpenedModel(source, cfg, None, None, sidecar=sidecar)


def check_teacher_classes(spec: str, teacher: Optional[List[str]], count: int, student: Optional[List[str]],
                          student_count: int) -> None:
    """A teacher predicts the student's classes: the same number, and (when both record them) the same names in
    the same order; ConfigError naming the first difference otherwise."""
    if teacher is None or student is None:
        if count != student_count:
            raise ConfigError(f"distill.teacher '{spec}' predicts {count} classes but the student has "
                              f"model.num_classes={student_count}; distillation compares the two class by class, so "
                              f"give a teacher trained (or fine-tuned) on the student's classes")
        if student is not None:
            log.warning("distill.teacher '%s' records no class names: only their number (%d) is compared; its class "
                        "i must be the student's class i ('%s' first)", spec, count, student[0] if student else "")
        return
    if list(teacher) == list(student):
        return
    i = next((i for i, (a, b) in enumerate(zip(teacher, student)) if a != b), min(len(teacher), len(student)))
    theirs = f"'{teacher[i]}'" if i < len(teacher) else "nothing (it has no more classes)"
    ours = f"'{student[i]}'" if i < len(student) else "nothing (it has no more classes)"
    raise ConfigError(f"distill.teacher '{spec}' was trained on other classes than the student's data: class {i} is "
                      f"{theirs} for the teacher but {ours} for the student ({len(teacher)} teacher classes, "
                      f"{len(student)} student classes). Distillation compares the two class by class, so the "
                      f"student would learn the wrong labels; give a teacher trained on the same class folders")


def _open_teacher(source: WeightsSource, student: Student, cache_dir: Optional[os.PathLike]) -> OpenedModel:
    spec, plan = source.spec, student.plan
    if source.kind == "mindcv":
        name = spec[len(MINDCV_PREFIX):]
        if student.mindcv_weights:
            network = mindcv_network(name, student.teacher_weights, plan.arch.num_classes, cache_dir)
        else:
            import mindcv.models  # slow import, only for mindcv teachers

            network = mindcv.models.create_model(name, num_classes=plan.arch.num_classes)
        check_teacher_classes(spec, None, plan.arch.num_classes, student.class_names, plan.arch.num_classes)
        cfg = None
    else:
        network, cfg = _vit_teacher(source, plan, student.class_names, cache_dir)
    network.set_train(False)
    return OpenedModel(source, cfg, plan, apply_amp(network, plan), best_weights(source.params)
                       if source.is_checkpoint else None)


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


def _vit_teacher(source: WeightsSource, plan: RunPlan, class_names: Optional[List[str]], cache_dir):
    """A ViT teacher from one of our checkpoints (its best weights) or published weights, at the student's image
    size; (network, the config it was rebuilt from or None). The architecture is the recorded config's (or the
    weights table's); weights from elsewhere tell it by their shapes."""
    spec, cfg = source.spec, None
    if source.meta.config is not None or spec in PRETRAINED:
        cfg = inference_config(source)
    if source.is_checkpoint:
        state = {k: v.asnumpy() for k, v in chosen_weights(source.params, None, spec).items()}
        overrides = {}
    else:
        weights = read_weights(spec, cache_dir=cache_dir)
        state = weights.state
        overrides = {k: v for k, v in weights.model_overrides.items() if k in ("gelu", "norm_eps")}
    arch = resolve_architecture(cfg.model) if cfg is not None else _published_architecture(state, overrides, spec)
    check_teacher_classes(spec, source.class_names, arch.num_classes, class_names, plan.arch.num_classes)
    student = plan.arch
    arch = replace(arch, image_size=student.image_size, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    network = VisionTransformer(arch, plan.formulation)
    state, notes, _ = fit_weights(state, model_param_shapes(network))
    for param in network.get_parameters():
        param.set_data(ms.Tensor(np.ascontiguousarray(state[param.name]), dtype=param.dtype))
    use_trained_heads(network, source.meta.trained_heads)
    log.info("distill.teacher: %s (%s, %d blocks, width %d%s)%s", spec, arch.name, arch.depth, arch.embed_dim,
             ", distilled" if arch.distilled else "", "; " + "; ".join(notes) if notes else "")
    return network, cfg


def mindcv_network(name: str, weights: str, num_classes: int, cache_dir: Optional[os.PathLike] = None):
    """mindcv's `name` with `weights` (a .ckpt path or URL), or mindcv's own published weights when `weights` is
    empty; what is downloaded goes into `cache_dir`."""
    import mindcv.models  # a runtime dependency, imported only when a mindcv model is asked for (it is slow)
    from mindcv.models.registry import get_pretrained_cfg  # same package

    if not mindcv.models.is_model(name):
        known = mindcv.models.list_models()
        raise ConfigError(f"'mindcv:{name}' is not a mindcv model{suggest(name, known)}; see "
                          f"mindcv.models.list_models() for the {len(known)} names")
    if not weights:
        if not mindcv.models.is_model_pretrained(name):
            raise ConfigError(f"mindcv publishes no weights for '{name}' in this version; set distill.teacher_weights "
                              f"to a MindSpore checkpoint of it (a path or URL)")
        if num_classes != 1000:
            raise ConfigError(f"mindcv's published '{name}' predicts the 1000 ImageNet classes but the student has "
                              f"model.num_classes={num_classes}; set distill.teacher_weights to a checkpoint trained "
                              f"on the student's classes")
        weights = get_pretrained_cfg(name)["url"]
    path = resolve_pretrained(weights, cache_dir)
    network = mindcv.models.create_model(name, num_classes=num_classes)
    try:
        params = ms.load_checkpoint(str(path))
        missing, _ = ms.load_param_into_net(network, params)
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"weights '{weights}' do not fit mindcv's '{name}' with {num_classes} classes "
                              f"({str(err).strip().splitlines()[-1]}); check the model name and that the checkpoint "
                              f"predicts the student's model.num_classes") from err
    if missing:
        raise CheckpointError(f"weights '{weights}' lack {len(missing)} parameters of mindcv's '{name}' (e.g. "
                              f"{', '.join(missing[:4])}); is it a checkpoint of that model?")
    log.info("mindcv %s with weights from %s", name, path)
    return network
