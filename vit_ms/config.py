"""Run configuration: one YAML file becomes typed, nested dataclasses.

    cfg = load_config("configs/vit_b16.yaml", overrides=["train.epochs=5", "data.root=/data/imagenet"])

Unknown keys and wrong types raise `ConfigError` naming the key and the closest valid one; values out of
range raise with the value and the fix. `save_config` writes the resolved config back as YAML.
"""
import dataclasses
import os
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Literal, Optional, Sequence, Union

import yaml

from .errors import ConfigError, suggest
from .variants import resolve_architecture

def _config_dir() -> Path:
    """The YAML recipes: vit_ms/configs in an installed package (pip install .), else configs/ of the checkout."""
    here = Path(__file__).resolve().parent
    return here / "configs" if (here / "configs").is_dir() else here.parent / "configs"


CONFIG_DIR = _config_dir()

IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


@dataclass
class ModelConfig:
    name: str = "vit_b16"  # a key of vit_ms.models.VARIANTS; the keys below set to null take the variant's
    num_classes: int = 1000
    image_size: int = 224
    patch_size: Optional[int] = None  # None: the variant's
    embed_dim: Optional[int] = None  # None: the variant's (also depth, num_heads, mlp_ratio)
    depth: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_ratio: Optional[float] = None
    in_channels: int = 3  # RGB only: the pipeline decodes every image to RGB
    qkv_bias: bool = True
    drop_rate: float = 0.0  # dropout after position embedding and in MLP / projections
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over blocks
    global_pool: Literal["token", "avg"] = "token"
    # timm's fc_norm (MAE, BEiT and many timm weights): LayerNorm after average pooling instead of the final norm;
    # needs global_pool=avg. Off by default (timm turns it on for avg) so earlier avg-pool checkpoints still load;
    # the converter reads it from the weights.
    fc_norm: bool = False
    representation_size: Optional[int] = None  # pre-logits Linear + tanh (original ViT), None: none
    gelu: Literal["erf", "tanh"] = "erf"  # published ViT weights use the exact (erf) GELU
    norm_eps: float = 1e-6
    # DeiT's distilled ViT: a distillation token and a second head (head_dist) trained against a teacher
    # (distill.*); inference averages the two heads' logits, as DeiT does
    distilled: bool = False
    # Formulations: the same function computed another way (see vit_ms/models/formulations.py); auto: the run
    # plan picks per device (vit_ms/plan.py).
    # fused: MindSpore's flash attention (FlashAttentionScore, Ascend 910B/910C only); standard: written out;
    # auto: fused where the kernel exists and nothing needs the attention probabilities (vit_ms/plan.py)
    attention: Literal["auto", "fused", "standard"] = "auto"
    patch_embed: Literal["auto", "conv", "matmul"] = "auto"  # matmul is faster on CPU
    backward: Literal["auto", "autodiff", "handwritten"] = "auto"  # handwritten: GELU/softmax gradients, faster on CPU (float32)
    bias_grad: Literal["auto", "reduce", "gemm"] = "auto"  # gemm: bias gradients as matrix products (GPU)
    pretrained: str = ""  # path, URL or name in vit_ms.weights.hub.PRETRAINED
    pretrained_sha256: str = ""  # checked when `pretrained` is a URL


@dataclass
class DataConfig:
    root: str = ""  # holds <train_split>/<class>/* and <val_split>/<class>/*
    # "digits": when `root` does not exist, write scikit-learn's bundled digits there first (the offline demo,
    # vit_ms.data.demo); "": never write anything (every config but demo.yaml)
    generate: Literal["", "digits"] = ""
    train_split: str = "train"
    val_split: str = "val"
    num_parallel_workers: int = 4
    shuffle: bool = True
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    ratio: List[float] = field(default_factory=lambda: [0.75, 1.333])
    hflip: float = 0.5
    # timm's policy string (DeiT: rand-m9-mstd0.5-inc1; mindcv's randaug-... reads the same), "" for none
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.0  # used only when auto_augment is ""
    re_prob: float = 0.25  # random erasing probability (timm's RandomErasing, per image)
    re_mode: Literal["pixel", "rand", "const"] = "pixel"  # erased box: per-pixel noise (DeiT), one colour, the mean
    re_count: int = 1  # boxes per erased image, sharing the area
    mixup: float = 0.8  # mixup alpha, 0 to disable
    cutmix: float = 1.0  # cutmix alpha, 0 to disable
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    crop_pct: float = 0.875  # eval: resize to image_size / crop_pct, then center crop
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # 0-255 scale
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # repeated augmentation (DeiT's RASampler): each image this many times per epoch, copies on different shards
    # and augmented independently; every shard still yields its usual count, 1: off (DeiT: 3)
    aug_repeats: int = 1
    on_bad_image: Literal["skip", "error"] = "skip"
    max_image_pixels: int = 178956970  # decompression-bomb guard (PIL's default limit)
    index_cache_dir: str = ""  # where folder scans are kept ("": ~/.cache/vit_ms/index, "off": scan every start)
    rescan: bool = False  # check every file again instead of reusing the index cache
    format: Literal["folder", "mindrecord"] = "folder"  # mindrecord: root holds python -m vit_ms.data.mindrecord output
    # folder format: native reads files in MindSpore's C++ reader (fast); python in Python threads (names and
    # replaces a file that fails after the scan); auto: native unless over 1% of the files need PIL to decode
    reader: Literal["auto", "native", "python"] = "auto"


@dataclass
class TrainConfig:
    epochs: int = 300
    batch_size: int = 128  # per device
    global_batch_size: int = 0  # >0: split evenly over the devices instead of batch_size per device
    # micro-batches per optimizer step; 0 (auto): 1, or, when global_batch_size is more than the devices hold
    # at batch_size each, the fewest that fit (the plan logs it)
    accum_steps: int = 0
    seed: int = 42
    mode: Literal["graph", "pynative"] = "graph"
    device_target: Literal["auto", "CPU", "GPU", "Ascend"] = "auto"
    device_id: int = 0
    freeze_backbone: bool = False  # train the head only
    log_interval: int = 20  # steps between progress lines
    steps_per_epoch: int = 0  # 0: the whole dataset; >0 caps it (smoke runs)
    deterministic: bool = False  # same data order and weights run to run (CPU)
    sink_mode: Literal["auto", "on", "off"] = "auto"  # dataset sink: on for Ascend with auto
    # blocks: recompute each transformer block's activations in the backward pass (Cell.recompute), trading time
    # for device memory on GPU/Ascend. On CPU MindSpore 2.10 it costs memory too (docs/performance.md).
    recompute: Literal["none", "blocks"] = "none"
    tensorboard: bool = False  # epoch scalars in <run_dir>/tensorboard (needs the optional tensorboardX package)
    # stop when a loss exceeds this x the running median of recent losses (a non-finite loss always stops); 0: off
    divergence_factor: float = 1e4
    ema: bool = False  # keep a float32 exponential moving average of the weights (evaluated and saved too)
    ema_decay: float = 0.9999  # per optimizer step; DeiT uses 0.99996
    ema_warmup: bool = False  # timm ModelEmaV3 warm-up: decay min(ema_decay, 1 - (1 + n)^(-2/3)) at update n
    # MindSpore's graph compile cache in <run_dir>/compile_cache: a relaunched or resumed run with the same code and
    # settings loads its graphs instead of building them again
    compile_cache: bool = False
    # MindSpore's graph compile level: O0 kernel by kernel, O1 with operator fusion, O2 whole-graph sink through
    # CANN's graph engine (Ascend graph mode only; deprecated by MindSpore 2.9); auto: MindSpore's own choice
    jit_level: Literal["auto", "O0", "O1", "O2"] = "auto"


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 5e-4  # base lr for a global batch of `lr_batch_size`
    lr_batch_size: int = 512  # lr = base lr * global_batch / lr_batch_size; 0 disables scaling
    min_lr: float = 1e-5
    warmup_epochs: int = 5
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05  # not applied to norms, biases, position embedding, class token
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    clip_grad_norm: float = 0.0  # global-norm clipping; 0 disables
    momentum: float = 0.9  # sgd only (PyTorch's SGD: no dampening)
    nesterov: bool = False  # sgd only
    layer_decay: float = 1.0  # BEiT/MAE layer-wise lr decay: layer l trains at lr x decay^(depth + 1 - l); 1.0: off


@dataclass
class LossConfig:
    label_smoothing: float = 0.1


@dataclass
class DistillConfig:
    """DeiT's knowledge distillation (vit_ms/train/distill.py): a frozen teacher's predictions on the same augmented
    batch train the distillation head (model.distilled=true; the class head itself without it)."""
    type: Literal["none", "hard", "soft"] = "none"  # hard: CE with the teacher's argmax; soft: KL at temperature tau
    # one of our training checkpoints (.ckpt), a vit_ms.weights.hub.PRETRAINED name or weights file of a ViT, or
    # "mindcv:<model name>" (e.g. mindcv:regnet_y_16gf) with distill.teacher_weights
    teacher: str = ""
    teacher_weights: str = ""  # mindcv teachers: a .ckpt path or URL ("": mindcv's own published weights)
    alpha: float = 0.5  # loss = (1 - alpha) x class-head loss + alpha x distillation loss (DeiT: 0.5)
    tau: float = 1.0  # soft distillation temperature (DeiT: 1.0)


@dataclass
class AmpConfig:
    level: Literal["auto", "O0", "O1", "O2", "O3"] = "auto"  # auto: O2 on Ascend, O0 on GPU/CPU
    # used when level is not O0; auto: dynamic for float16, none for bfloat16 (float32's exponent range)
    loss_scale: Literal["auto", "dynamic", "fixed", "none"] = "auto"
    loss_scale_value: float = 65536.0
    scale_window: int = 2000
    # the low-precision type amp casts to; auto: bfloat16 on Ascend 910B/910C, float16 elsewhere (bfloat16 needs
    # no loss scale; CPU, GPU and the first-generation Ascend 910 have no bfloat16 kernels for it)
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    # LayerNorm and the attention softmax in the amp dtype under O2/O3 (half) or cast up to float32; auto: half on
    # GPU at O2/O3 without attention dropout, float32 elsewhere (vit_ms/plan.py); half needs amp.level O2 or O3
    norms: Literal["auto", "half", "float32"] = "auto"


@dataclass
class MemoryConfig:
    """The device memory pool, as `mindspore.runtime.set_memory` takes it; "" / auto keep MindSpore's default."""
    max_size: str = ""  # e.g. "56GB": the most the pool may take (default: all device memory)
    init_size: str = ""  # e.g. "2GB": taken at start (default 2GB)
    increase_size: str = ""  # e.g. "2GB": each growth of the pool (default 2GB)
    optimize_level: Literal["auto", "O0", "O1"] = "auto"  # O1: reuse memory more aggressively (default O0)
    huge_page_reserve_size: str = ""  # e.g. "1GB" kept out of huge-page memory (default 0GB)


@dataclass
class CheckpointConfig:
    keep_last: int = 3  # epoch checkpoints kept besides last.ckpt and best.ckpt
    interval_epochs: int = 1
    interval_steps: int = 0  # also write last.ckpt every N steps (0: only at epoch ends)


@dataclass
class EvalConfig:
    batch_size: int = 0  # 0: train.batch_size
    interval_epochs: int = 1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    amp: AmpConfig = field(default_factory=AmpConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs"
    run_name: str = ""  # "" : the config file's stem
    distributed: Union[bool, Literal["auto"]] = "auto"  # auto: on when launched by msrun / rank table


# ----------------------------------------------------------------------------------------------------------
# Typed conversion of plain YAML values into the dataclasses above.


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, List):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Union:
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
    elif origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(typing.get_args(tp)):  # YAML 1.1 reads on/off as bools
            value = "on" if value else "off"
        if value in typing.get_args(tp) and type(value) is type(typing.get_args(tp)[0]):
            return value
    elif origin in (list, List):
        if isinstance(value, (list, tuple)):
            return [_coerce(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads off / on / yes / no unquoted as booleans
            raise ConfigError(f"config key '{key}' must be text, but YAML read the unquoted word as {value!r}; "
                              f"quote it, e.g. {key.rsplit('.', 1)[-1]}: 'off'")
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, prefix=f"{key}.")
    raise ConfigError(f"config key '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _build(cls: type, values: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggest(str(key), hints, prefix)} "
                              f"(valid keys in '{prefix.rstrip('.') or 'top level'}': {', '.join(hints)})")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    return cls(**kwargs)


# Keys renamed so that a setting has one spelling from YAML to plan to log: old key -> (new key, old value ->
# new value). Configs and checkpoints that use an old key still load, with a FutureWarning naming the new one.
RENAMED_KEYS = {
    "model.fused_attention": ("model.attention", {"auto": "auto", "on": "fused", "off": "standard"}),
    "amp.half_norms": ("amp.norms", {"auto": "auto", "on": "half", "off": "float32"}),
}


def _rename_old_keys(values: dict) -> dict:
    """`values` with each key of RENAMED_KEYS moved to its new name and value (a copy when anything moved)."""
    for old, (new, mapping) in RENAMED_KEYS.items():
        section, old_key = old.split(".")
        node = values.get(section)
        if not isinstance(node, dict) or old_key not in node:
            continue
        raw = node[old_key]
        value = {True: "on", False: "off"}.get(raw, raw) if isinstance(raw, bool) else raw  # YAML 1.1 on/off
        if value not in mapping:
            raise ConfigError(f"config key '{old}' (now '{new}') must be one of {', '.join(mapping)}, got {raw!r}; "
                              f"write {new}: {' or '.join(sorted(set(mapping.values())))} instead")
        new_key = new.split(".")[1]
        if new_key in node:
            raise ConfigError(f"config sets both '{old}' and its new name '{new}'; keep only {new}")
        warnings.warn(f"config key '{old}: {value}' is now '{new}: {mapping[value]}'; the old key will stop "
                      f"loading in a later version", FutureWarning, stacklevel=3)
        node = {k: v for k, v in node.items() if k != old_key}
        node[new_key] = mapping[value]
        values = {**values, section: node}
    return values


def config_from_dict(values: dict) -> Config:
    """Build a `Config` from nested plain values (as read from YAML); missing keys keep their defaults."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(values).__name__}")
    cfg = _build(Config, _rename_old_keys(values))
    validate(cfg)
    return cfg


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def _field_type(parts: Sequence[str]) -> Any:
    """The declared type of the dotted key `parts` in Config, or None when there is no such key."""
    tp: Any = Config
    for part in parts:
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _parse_override(text: str) -> tuple:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if _field_type(key.split(".")) is str and raw.strip() and raw.strip()[0] not in "'\"[{!&*":
        return key, raw.strip()  # a text key takes the text as written: off, yes, 1e3 stay strings
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:  # also tags (!!python/object ...): the safe loader constructs none of them
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"override '{text}': the value is not plain YAML ({problem}); write a number, true/false, "
                          f"a list like [0.08, 1.0], or text (quote it, e.g. {key}='a: b', when it holds YAML "
                          f"characters; tags such as !!python/... are never read)") from None
    return key, value


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """Set dotted keys in nested plain values: ["train.epochs=5"] -> values["train"]["epochs"] = 5."""
    for text in overrides:
        key, value = _parse_override(text)
        node = values
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
        node[parts[-1]] = value
    return values


def resolve_config_path(path: str) -> Path:
    """Find a config: the path as given, else the same name inside configs/ (with or without .yaml)."""
    candidates = [Path(path), CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config file '{path}' not found (looked in the current folder and {CONFIG_DIR})"
                      f"{suggest(Path(path).name, known)}; available configs: {', '.join(known)}")


def _merge(base: dict, update: dict) -> dict:
    """Nested dict merge: sections merge key by key, other values replace."""
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    """Read one config file (safe loader); a top-level `base: other.yaml` is read first and updated by this file."""
    if path in seen:
        raise ConfigError(f"config file '{path}' includes itself through 'base'")
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                          f"{err.start}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8 old.yaml > new.yaml") from err
    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}' ({err.strerror}); give a readable YAML file") from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"'base' in '{path}' must be a config file name, got {base!r}")
    sibling = path.parent / base
    return _merge(read_yaml(sibling if sibling.is_file() else resolve_config_path(base), seen + (path,)), values)


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply `section.key=value` overrides, check and return it.

    `path` may name a file in configs/ ("vit_b16.yaml" or "vit_b16"); the run is named after the file.
    """
    values: dict = {}
    if path:
        resolved = resolve_config_path(path)
        values = read_yaml(resolved)
        values.setdefault("run_name", resolved.stem)
    return config_from_dict(apply_overrides(values, overrides))


def save_config(cfg: Config, path: os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------
# Range checks: each names the key, the value and the fix.


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_MEMORY_SIZE = re.compile(r"([1-9][0-9]*(\.[0-9]*)?|0\.[0-9]*[1-9][0-9]*)GB")  # set_memory's format, above 0


def _check_memory(mem: "MemoryConfig") -> None:
    for key in ("max_size", "init_size", "increase_size", "huge_page_reserve_size"):
        value = getattr(mem, key)
        ok = value == "" or _MEMORY_SIZE.fullmatch(value) or (key == "huge_page_reserve_size" and value == "0GB")
        _check(bool(ok), f"memory.{key}={value!r} must be a size in GB as mindspore.runtime.set_memory takes it, "
                         f"e.g. \"32GB\" or \"0.5GB\" (\"\" keeps MindSpore's default)")


def validate(cfg: Config) -> None:
    m, d, t, o = cfg.model, cfg.data, cfg.train, cfg.optim
    _check(m.num_classes > 0, f"model.num_classes={m.num_classes} must be positive")
    resolve_architecture(m)  # the variant merged with the model.* keys: divisibility, widths, rates
    _check(t.epochs > 0, f"train.epochs={t.epochs} must be positive")
    _check(t.batch_size > 0, f"train.batch_size={t.batch_size} must be positive")
    _check(t.global_batch_size >= 0, f"train.global_batch_size={t.global_batch_size} must be >= 0 (0: off)")
    _check(t.accum_steps >= 0, f"train.accum_steps={t.accum_steps} must be >= 0 (0: auto, 1: no accumulation)")
    _check(t.steps_per_epoch >= 0, f"train.steps_per_epoch={t.steps_per_epoch} must be >= 0 (0: whole dataset)")
    _check(t.divergence_factor == 0 or t.divergence_factor > 1,
           f"train.divergence_factor={t.divergence_factor} must be > 1 (e.g. 1e4), or 0 to stop only on a "
           f"non-finite loss")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay} must be in [0, 1), e.g. 0.9999 (DeiT: 0.99996)")
    _check(o.lr > 0, f"optim.lr={o.lr} must be positive")
    _check(0 <= o.min_lr <= o.lr, f"optim.min_lr={o.min_lr} must be in [0, optim.lr={o.lr}]")
    _check(o.warmup_epochs >= 0, f"optim.warmup_epochs={o.warmup_epochs} must be >= 0")
    _check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
           f"optim.betas={o.betas} must be two numbers in [0, 1)")
    _check(0 <= o.momentum < 1, f"optim.momentum={o.momentum} must be in [0, 1)")
    _check(not o.nesterov or o.momentum > 0, "optim.nesterov=true needs optim.momentum > 0, e.g. 0.9")
    _check(not o.nesterov or o.name == "sgd", f"optim.nesterov=true applies to optim.name=sgd only, but the "
           f"optimizer is {o.name}, which would ignore it; drop optim.nesterov or set optim.name=sgd")
    _check(0 < o.layer_decay <= 1, f"optim.layer_decay={o.layer_decay} must be in (0, 1] (1.0: off; "
                                   f"BEiT/MAE fine-tuning uses 0.65-0.75)")
    _check(o.clip_grad_norm >= 0, f"optim.clip_grad_norm={o.clip_grad_norm} must be >= 0 (0 disables)")
    _check(0.0 <= cfg.loss.label_smoothing < 1.0,
           f"loss.label_smoothing={cfg.loss.label_smoothing} must be in [0, 1)")
    validate_distill(cfg.distill)
    _check(len(d.mean) == 3 and len(d.std) == 3 and all(s > 0 for s in d.std),
           f"data.mean={d.mean} and data.std={d.std} must each have 3 values, std positive")
    _check(0 < d.crop_pct <= 1, f"data.crop_pct={d.crop_pct} must be in (0, 1]")
    _check(d.re_count >= 1, f"data.re_count={d.re_count} must be at least 1 (boxes per erased image)")
    _check(d.num_parallel_workers > 0, f"data.num_parallel_workers={d.num_parallel_workers} must be positive")
    _check(d.mixup >= 0 and d.cutmix >= 0, "data.mixup and data.cutmix must be >= 0 (0 disables)")
    _check(len(d.scale) == 2 and 0 < d.scale[0] <= d.scale[1] <= 1,
           f"data.scale={d.scale} must be [min, max] with 0 < min <= max <= 1")
    _check(len(d.ratio) == 2 and 0 < d.ratio[0] <= d.ratio[1],
           f"data.ratio={d.ratio} must be [min, max] aspect ratios with 0 < min <= max, e.g. [0.75, 1.333]")
    for key in ("hflip", "re_prob", "mixup_prob", "mixup_switch_prob"):
        _check(0.0 <= getattr(d, key) <= 1.0, f"data.{key}={getattr(d, key)} is a probability: use a value in [0, 1]")
    _check(d.aug_repeats >= 1, f"data.aug_repeats={d.aug_repeats} must be >= 1 (1: off; DeiT uses 3)")
    _check(d.aug_repeats == 1 or d.format == "folder",
           f"data.aug_repeats={d.aug_repeats} (repeated augmentation) needs data.format=folder: MindRecord files are "
           f"read by MindDataset's own sampler; set data.aug_repeats=1 or train from the image folder")
    _check(d.max_image_pixels > 0, f"data.max_image_pixels={d.max_image_pixels} must be positive")
    _check_memory(cfg.memory)
    _check(cfg.checkpoint.keep_last >= 0, f"checkpoint.keep_last={cfg.checkpoint.keep_last} must be >= 0")
    _check(cfg.eval.batch_size >= 0, f"eval.batch_size={cfg.eval.batch_size} must be >= 0 (0: train.batch_size)")


def validate_distill(k: DistillConfig) -> None:
    _check(k.type == "none" or k.teacher,
           f"distill.type={k.type} needs a teacher: set distill.teacher to one of our checkpoints (.ckpt), a published "
           f"weights name (vit_ms.weights.hub.PRETRAINED) or mindcv:<model>, e.g. mindcv:regnet_y_16gf")
    _check(k.type != "none" or not (k.teacher or k.teacher_weights),
           f"distill.teacher='{k.teacher or k.teacher_weights}' is set but distill.type=none, so no teacher would run; "
           f"set distill.type=hard (DeiT) or soft, or clear distill.teacher")
    _check(not k.teacher_weights or k.teacher.startswith("mindcv:"),
           f"distill.teacher_weights='{k.teacher_weights}' is for mindcv teachers (distill.teacher=mindcv:<model>); "
           f"a ViT teacher's weights are distill.teacher itself")
    _check(0.0 <= k.alpha <= 1.0, f"distill.alpha={k.alpha} weighs the distillation loss: use a value in [0, 1] "
                                  f"(DeiT: 0.5)")
    _check(k.tau > 0, f"distill.tau={k.tau} is a softmax temperature and must be positive (DeiT: 1.0)")
