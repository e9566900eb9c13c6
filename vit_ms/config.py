"""The run configuration's schema: every section and key as a typed, nested dataclass, and the values it may take.

    cfg = load_config("configs/vit_b16.yaml", ["train.epochs=5"])   # vit_ms/config_loader.py: YAML -> Config
    validate(cfg)                                                   # ranges and consistency, one message each

`validate` names the key, the value and the fix: every number is finite (one rule for all float keys) and in
range, and keys that depend on each other agree. A checkpoint records its config with the names of the version
that wrote it; `upgrade_recorded_config` brings a recorded one to today's names, once, where checkpoints are read.
"""
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple, Union

from .errors import ConfigError
from .variants import resolve_architecture

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
    # fused: MindSpore's flash attention (FlashAttentionScore, Ascend 910B/910C only: float16, no attention dropout,
    # no attention maps); standard: written out; auto: fused where the kernel exists and nothing needs the attention
    # probabilities (vit_ms/plan.py). The other layers' implementations are the plan's per device (the benchmark's
    # --formulation times another).
    attention: Literal["auto", "fused", "standard"] = "auto"
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
    format: Literal["folder", "mindrecord"] = "folder"  # mindrecord: root holds python -m vit_ms.mindrecord output


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
    """DeiT's knowledge distillation (vit_ms/train/losses.py): a frozen teacher's predictions on the same augmented
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


def config_to_dict(cfg: Config) -> dict:
    """Nested plain values, as a checkpoint and <run_dir>/config.yaml record them."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------------------
# Names of earlier versions, as checkpoints record them.

# old key -> (today's key, old value -> today's value)
RENAMED_KEYS: Dict[str, Tuple[str, Dict[Any, str]]] = {
    "model.fused_attention": ("model.attention", {"auto": "auto", "on": "fused", "off": "standard",
                                                  True: "fused", False: "standard"}),
    "amp.half_norms": ("amp.norms", {"auto": "auto", "on": "half", "off": "float32", True: "half",
                                     False: "float32"}),
}
# old key -> (the values a recorded config may hold, None: any; why the key is gone)
REMOVED_KEYS: Dict[str, Tuple[Optional[Tuple[Any, ...]], str]] = {
    "model.in_channels": ((3,), "every model takes RGB images (3 channels), as the pipeline decodes them"),
    **{f"model.{key}": (None, f"how a layer is computed is the run plan's choice per device; the benchmark times "
                              f"another with python -m vit_ms.benchmark --formulation {key}=...")
       for key in ("patch_embed", "backward", "bias_grad")},
    "data.reader": (None, "a folder's files are read by Python threads, which replace a file that turns bad "
                          "after the scan as they meet it"),
}


def upgrade_recorded_config(values: dict) -> dict:
    """A config recorded by an earlier version (a checkpoint's) in today's names: a copy, `values` is unchanged.

    Raises ConfigError for a recorded value that today's model cannot take (a 1-channel model).
    """
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for old in (*RENAMED_KEYS, *REMOVED_KEYS):
        section, old_key = old.split(".")
        node = values.get(section)
        if not isinstance(node, dict) or old_key not in node:
            continue
        value = node.pop(old_key)
        new, mapping = RENAMED_KEYS.get(old, (None, None))
        legal = mapping if mapping is not None else REMOVED_KEYS[old][0]
        if legal is not None and value not in legal:
            raise ConfigError(f"the recorded config sets {old}={value!r}, which this version cannot build "
                              f"(it takes {', '.join(repr(v) for v in legal)})")
        if new is not None:
            node.setdefault(new.split(".")[1], mapping[value])
    return values


def renamed_key_hint(key: str) -> str:
    """For a user's config that uses an old name: what to write instead ('' for a key that never existed)."""
    if key in REMOVED_KEYS:
        return f"; '{key}' was removed: {REMOVED_KEYS[key][1]}, so delete the key"
    if key not in RENAMED_KEYS:
        return ""
    new, mapping = RENAMED_KEYS[key]
    spelled = ", ".join(f"{k} -> {v}" for k, v in mapping.items() if isinstance(k, str))
    return f"; '{key}' is now '{new}' ({spelled}): rename it"


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


def _numbers(node: Any, key: str) -> Iterator[Tuple[str, float]]:
    """(dotted key, value) of every float in the config, list items included."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _numbers(getattr(node, f.name), f"{key}{f.name}" if not key else f"{key}.{f.name}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _numbers(item, f"{key}[{i}]")
    elif isinstance(node, float):
        yield key, node


def validate(cfg: Config) -> None:
    for key, value in _numbers(cfg, ""):  # one rule for every float key: a run cannot mean inf or nan
        _check(math.isfinite(value), f"config key '{key}' is {value}, which no run can mean; give a finite number")
    m, d, t, o, a = cfg.model, cfg.data, cfg.train, cfg.optim, cfg.amp
    _check(m.num_classes > 0, f"model.num_classes={m.num_classes} must be positive")
    resolve_architecture(m)  # the variant merged with the model.* keys: divisibility, widths, rates
    _check(t.epochs > 0, f"train.epochs={t.epochs} must be positive")
    _check(t.batch_size > 0, f"train.batch_size={t.batch_size} must be positive")
    _check(t.global_batch_size >= 0, f"train.global_batch_size={t.global_batch_size} must be >= 0 (0: off)")
    _check(t.accum_steps >= 0, f"train.accum_steps={t.accum_steps} must be >= 0 (0: auto, 1: no accumulation)")
    _check(t.steps_per_epoch >= 0, f"train.steps_per_epoch={t.steps_per_epoch} must be >= 0 (0: whole dataset)")
    _check(0 <= t.seed < 2 ** 32, f"train.seed={t.seed} must be in [0, 2^32), as MindSpore and numpy take it")
    _check(t.device_id >= 0, f"train.device_id={t.device_id} must be >= 0 (the device's index on this host)")
    _check(t.log_interval >= 1, f"train.log_interval={t.log_interval} must be >= 1 (steps between progress lines)")
    _check(t.divergence_factor == 0 or t.divergence_factor > 1,
           f"train.divergence_factor={t.divergence_factor} must be > 1 (e.g. 1e4), or 0 to stop only on a "
           f"non-finite loss")
    _check(0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay} must be in [0, 1), e.g. 0.9999 (DeiT: 0.99996)")
    _check(o.lr > 0, f"optim.lr={o.lr} must be positive")
    _check(0 <= o.min_lr <= o.lr, f"optim.min_lr={o.min_lr} must be in [0, optim.lr={o.lr}]")
    _check(o.warmup_epochs >= 0, f"optim.warmup_epochs={o.warmup_epochs} must be >= 0")
    _check(o.warmup_lr >= 0, f"optim.warmup_lr={o.warmup_lr} must be >= 0 (the lr the warmup starts from)")
    _check(o.lr_batch_size >= 0, f"optim.lr_batch_size={o.lr_batch_size} must be >= 0 (0: lr not scaled)")
    _check(o.eps > 0, f"optim.eps={o.eps} must be positive (e.g. 1e-8)")
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
    _check(d.color_jitter >= 0, f"data.color_jitter={d.color_jitter} must be >= 0 (0: off)")
    _check(a.loss_scale_value >= 1, f"amp.loss_scale_value={a.loss_scale_value} must be >= 1 (e.g. 65536)")
    _check(a.scale_window >= 1, f"amp.scale_window={a.scale_window} must be >= 1 (steps between loss scale growths)")
    _check_memory(cfg.memory)
    c = cfg.checkpoint
    _check(c.keep_last >= 0, f"checkpoint.keep_last={c.keep_last} must be >= 0")
    _check(c.interval_epochs >= 1, f"checkpoint.interval_epochs={c.interval_epochs} must be >= 1")
    _check(c.interval_steps >= 0, f"checkpoint.interval_steps={c.interval_steps} must be >= 0 (0: at epoch ends)")
    _check(cfg.eval.batch_size >= 0, f"eval.batch_size={cfg.eval.batch_size} must be >= 0 (0: train.batch_size)")
    _check(cfg.eval.interval_epochs >= 1, f"eval.interval_epochs={cfg.eval.interval_epochs} must be >= 1")


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
