"""The run plan: every setting that says `auto`, and every derived choice, resolved once into a frozen record.

    runtime = setup_runtime(cfg)          # MindSpore context, device and chip, rank: the only place that reads them
    plan = resolve_plan(cfg, runtime)     # architecture, formulation, amp, loss scale, sink mode, batches, compile
    model = model_from_plan(plan)

The model, the train step, the data and the logs take their decisions from `plan`; nothing else reads
MindSpore's global context or the environment for them. The plan is logged once at start, written to
`<run_dir>/plan.json` and stored in every checkpoint beside the config.
"""
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .chips import chip_label, flash_attention_limit, has_bfloat16, has_flash_attention
from .config import Config
from .errors import ConfigError
from .models.formulations import BACKWARDS, BIAS_GRADS, PATCH_EMBEDS, Formulation
from .variants import Architecture, resolve_architecture
from .runtime import Runtime, compile_settings

PURPOSES = ("train", "inference", "export")
FORCEABLE = {"patch_embed": PATCH_EMBEDS, "backward": BACKWARDS, "bias_grad": BIAS_GRADS}  # speed alone differs
NOTED_TOKENS = 16_384  # tokens per image above which the plan says how many (2048 px at patch 16; 224 px: 197)
REFUSED_BYTES = 256 * 2 ** 30  # more than any one device holds (H200: 141 GB): refused before anything is built


@dataclass(frozen=True)
class RunPlan:
    arch: Architecture
    formulation: Formulation
    device_target: str  # "CPU", "GPU" or "Ascend"
    mode: str  # "graph" or "pynative"
    amp_level: str  # "O0".."O3"
    loss_scale: str  # "none" (amp O0, bfloat16), "fixed" or "dynamic"
    loss_scale_value: float
    scale_window: int
    sink_mode: bool  # dataset sink mode for Model.train
    recompute_blocks: bool  # recompute block activations in the backward (training only)
    rank: int
    world_size: int
    batch_size: int  # per device
    global_batch_size: int  # batch_size x world_size x accum_steps: one optimizer step
    eval_batch_size: int  # per device
    accum_steps: int = 1  # micro-batches of batch_size per optimizer step (gradient accumulation)
    chip: str = ""  # vit_ms.chips: "ascend910b", "sm_90", "" on CPU
    amp_dtype: str = "float32"  # what amp casts to: "float16" or "bfloat16"; "float32" under O0 (nothing cast)
    jit_level: str = ""  # MindSpore's compile level; "": its default
    compile_cache_dir: str = ""  # MindSpore's compile cache; "": off
    memory: Dict[str, str] = field(default_factory=dict)  # mindspore.runtime.set_memory settings; {}: defaults
    # the train step's overflow check reads the loss alone (a non-finite loss skips the step), not every gradient
    check_loss_only: bool = False
    notes: List[str] = field(default_factory=list, compare=False)  # why each 'auto' became what it is

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the resolved config."""
        return self.rank == 0

    @property
    def float_status_overflow(self) -> bool:
        """Ascend reports overflow in float-status registers; CPU and GPU check the gradients for inf/nan."""
        return self.device_target == "Ascend"

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for the log."""
        a, f = self.arch, self.formulation
        return (f"{a.name} (patch {a.patch_size}, width {a.embed_dim}, depth {a.depth}, heads {a.num_heads}, "
                f"{a.image_size} px, {a.num_classes} classes) on {chip_label(self.device_target, self.chip)} "
                f"x{self.world_size} (rank {self.rank}), {self.mode} mode, amp {self.amp_level}"
                + (f" {self.amp_dtype}" if self.amp_level != "O0" else "") + f", loss scale {self.loss_scale}, "
                f"sink {'on' if self.sink_mode else 'off'}, recompute {'blocks' if self.recompute_blocks else 'none'}; "
                f"{f.describe()}; batch {self.batch_size} per device"
                + (f" x {self.accum_steps} accumulated" if self.accum_steps > 1 else "")
                + f", {self.global_batch_size} global; jit level {self.jit_level or 'default'}, compile cache "
                + (self.compile_cache_dir or "off")
                + (f", memory {self.memory}" if self.memory else ""))


def _choose(key: str, setting: str, auto_value: str, on_value: str, off_value: str, notes: List[str],
            why: str) -> str:
    """Map an auto/on/off (or explicit) setting to a value, noting why 'auto' chose what it did."""
    if setting == "auto":
        notes.append(f"{key}=auto -> {auto_value} ({why})")
        return auto_value
    return {"on": on_value, "off": off_value}.get(setting, setting)


def batch_and_accumulation(cfg: Config, world_size: int, notes: Optional[List[str]] = None) -> Tuple[int, int]:
    """(micro-batch per device, accumulation steps) of one optimizer step.

    Without train.global_batch_size: train.batch_size per device, train.accum_steps (0: 1) micro-batches.
    With it: split over the devices; with train.accum_steps 0 (auto) the share of each device is cut into the
    fewest micro-batches of at most train.batch_size (what a device holds) that divide it evenly.
    """
    t = cfg.train
    if t.global_batch_size <= 0:
        return t.batch_size, max(t.accum_steps, 1)
    if t.global_batch_size % world_size:
        raise ConfigError(f"train.global_batch_size={t.global_batch_size} is not divisible by the {world_size} "
                          f"devices of this run; use a multiple of {world_size}, or set train.batch_size per device")
    share = t.global_batch_size // world_size
    if t.accum_steps > 0:
        if share % t.accum_steps:
            raise ConfigError(f"train.global_batch_size={t.global_batch_size} over {world_size} device(s) is {share} "
                              f"images each, not divisible into train.accum_steps={t.accum_steps} micro-batches; "
                              f"use a divisor of {share} or train.accum_steps=0 (auto)")
        return share // t.accum_steps, t.accum_steps
    accum = next(k for k in range(1, share + 1) if share % k == 0 and share // k <= t.batch_size)
    if accum > 1 and notes is not None:
        notes.append(f"train.accum_steps=auto -> {accum} (train.global_batch_size={t.global_batch_size} over "
                     f"{world_size} device(s) is {share} images each, more than train.batch_size={t.batch_size}: "
                     f"{accum} micro-batches of {share // accum})")
    return share // accum, accum


def resolve_amp_level(level: str, device_target: str) -> str:
    """'auto' is O2 on Ascend and O0 elsewhere (O2 on CPU is slower and O1/bf16 fail there)."""
    if level != "auto":
        return level
    return "O2" if device_target == "Ascend" else "O0"


def _attention(cfg: Config, runtime: Runtime, amp_level: str, purpose: str, notes: List[str]) -> str:
    """model.attention: 'fused' (FlashAttentionScore) only where CANN has the kernel and the shape fits it."""
    m, device, arch = cfg.model, runtime.device_target, resolve_architecture(cfg.model)
    chip = chip_label(device, runtime.chip)
    if purpose == "export" or m.attention == "standard":
        if m.attention == "auto":
            notes.append("model.attention=auto -> standard (exports stay portable)")
        return "standard"
    shape_limit = flash_attention_limit(arch.head_dim, arch.num_heads)
    # What keeps the fused kernel from this run: (it holds, why auto writes attention out, what forcing fused gets,
    # and whether that refuses the run or notes it)
    obstacles = [
        (not has_flash_attention(device, runtime.chip), f"no FlashAttentionScore kernel on {chip}",
         f"model.attention=fused needs CANN's FlashAttentionScore kernel, which exists on Ascend 910B/910C (Atlas "
         f"A2/A3) only; this run is on {chip}: use model.attention=auto or standard", True),
        (bool(shape_limit), f"FlashAttentionScore cannot take it: {shape_limit}",
         f"model.attention=fused cannot run this model: {shape_limit}; use model.attention=auto or standard", True),
        (m.attn_drop_rate > 0, f"model.attn_drop_rate={m.attn_drop_rate} needs the written-out attention",
         f"model.attention=fused cannot apply model.attn_drop_rate={m.attn_drop_rate} (the fused kernel is used "
         f"without its dropout mask); set model.attn_drop_rate=0 or model.attention=auto", True),
        (amp_level == "O0", "amp O0 keeps float32; the fused kernel would compute attention in float16",
         "model.attention=fused at amp O0: the kernel takes float16 only, so attention computes in float16 while "
         "the rest of the model is float32", False),
    ]
    found = [(why, forced, refused) for holds, why, forced, refused in obstacles if holds]
    if m.attention == "auto":
        why = found[0][0] if found else f"FlashAttentionScore on {chip}"
        return _choose("model.attention", "auto", "standard" if found else "fused", "", "", notes, why)
    for _, forced, refused in found:
        if refused:
            raise ConfigError(forced)
        notes.append(forced)
    return "fused"


def parse_formulation(items: Sequence[str]) -> Dict[str, str]:
    """["backward=autodiff", ...] (the benchmark's --formulation) -> {"backward": "autodiff"}, checked."""
    forced = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in FORCEABLE or value not in FORCEABLE[key]:
            choices = "; ".join(f"{k}={' or '.join(v)}" for k, v in FORCEABLE.items())
            raise ConfigError(f"--formulation {item!r} must be one of {choices}")
        forced[key] = value
    return forced


def _formulation(cfg: Config, runtime: Runtime, amp_level: str, purpose: str, notes: List[str],
                 forced: Mapping[str, str]) -> Formulation:
    """How each layer is computed: per device, or as `forced` (the benchmark's --formulation) says."""
    device = runtime.device_target
    patch = _choose("patch_embed", forced.get("patch_embed", "auto"), "conv" if device == "Ascend" else "matmul", "",
                    "", notes, f"{device}")
    attention = _attention(cfg, runtime, amp_level, purpose, notes)
    if forced.get("backward") == "handwritten" and amp_level != "O0":
        raise ConfigError(f"--formulation backward=handwritten computes float32 gradients only, but amp.level "
                          f"resolves to {amp_level}; leave it out or set amp.level=O0")
    handwritten_auto = device == "CPU" and amp_level == "O0" and purpose == "train"
    backward = _choose("backward", forced.get("backward", "auto"), "handwritten" if handwritten_auto else "autodiff",
                       "", "", notes, "written-out GELU/softmax gradients are faster on CPU in float32")
    bias_grad = _choose("bias_grad", forced.get("bias_grad", "auto"), "gemm" if device == "GPU" else "reduce", "", "",
                        notes, "bias gradients as ones(1, M) @ dy run on GPU tensor cores; a reduction elsewhere")
    return Formulation(patch_embed=patch, attention=attention, backward=backward, bias_grad=bias_grad,
                       norms=_norms(cfg, device, amp_level, notes))


def _norms(cfg: Config, device: str, amp_level: str, notes: List[str]) -> str:
    """amp.norms: LayerNorm and the attention softmax in the amp dtype ('half') or in float32."""
    half_amp = amp_level in ("O2", "O3")  # O0 runs in float32; O1 gives these layers float32 inputs
    if cfg.amp.norms == "half" and not half_amp:
        raise ConfigError(f"amp.norms=half computes LayerNorm and softmax in the amp dtype, but amp.level resolves "
                          f"to {amp_level}, where they get float32 inputs; use amp.level=O2 or O3, or "
                          f"amp.norms=auto")
    if not half_amp:
        why = f"amp {amp_level}: LayerNorm and softmax get float32 inputs"
    elif device != "GPU":
        why = f"{device} keeps LayerNorm and softmax in float32"
    elif cfg.model.attn_drop_rate > 0:
        why = f"model.attn_drop_rate={cfg.model.attn_drop_rate}: the dropped softmax stays in float32"
    else:
        why = "float16 LayerNorm and softmax measured faster on an H100 under O2"
    half_auto = device == "GPU" and half_amp and cfg.model.attn_drop_rate == 0
    return _choose("amp.norms", cfg.amp.norms, "half" if half_auto else "float32", "", "", notes, why)


def resolve_amp_dtype(cfg: Config, runtime: Runtime, amp_level: str, notes: List[str]) -> str:
    """amp.dtype: bfloat16 where the chip has it (Ascend 910B/910C) when auto; float32 under O0 (nothing cast)."""
    device, dtype = runtime.device_target, cfg.amp.dtype
    chip = chip_label(device, runtime.chip)
    if dtype == "bfloat16" and not has_bfloat16(device, runtime.chip):
        raise ConfigError(f"amp.dtype=bfloat16 needs bfloat16 matmul kernels, which MindSpore has on Ascend "
                          f"910B/910C (Atlas A2/A3) only; this run is on {chip}: use amp.dtype=float16 or auto")
    if amp_level == "O0":
        if dtype == "bfloat16":
            raise ConfigError("amp.dtype=bfloat16 casts nothing at amp.level O0 (float32 throughout); set "
                              "amp.level=O1, O2 or O3 with it, or leave amp.dtype=auto")
        return "float32"
    bf16 = has_bfloat16(device, runtime.chip)
    return _choose("amp.dtype", dtype, "bfloat16" if bf16 else "float16", "", "", notes,
                   f"{chip} has bfloat16" if bf16 else f"no bfloat16 kernels on {chip}")


def resolve_loss_scale(cfg: Config, amp_level: str, amp_dtype: str, notes: List[str]) -> str:
    """No loss scale in float32 (O0); auto: none for bfloat16 (float32's exponent range), dynamic for float16."""
    if amp_level == "O0":
        return "none"
    if cfg.amp.loss_scale != "auto":
        return cfg.amp.loss_scale
    scale = "none" if amp_dtype == "bfloat16" else "dynamic"
    notes.append(f"amp.loss_scale=auto -> {scale} ("
                 + ("bfloat16 has float32's exponent range: gradients do not underflow" if scale == "none"
                    else "float16 gradients underflow without it") + ")")
    return scale


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:,.1f} GiB" if nbytes >= 2 ** 30 else f"{nbytes / 2 ** 20:,.1f} MiB"


def check_input_size(arch: Architecture, batch: int, blocks: int, fused: bool, notes: List[str]) -> None:
    """Refuse an image size whose float32 position embedding and attention probabilities cannot fit on a device,
    before anything is allocated; note the estimate of one with many tokens.

    batch: images per device; blocks: how many blocks' probabilities are held at once (all of them for the
    backward pass of a training step, one at inference); fused attention holds none (FlashAttentionScore).
    """
    pos_embed = arch.tokens * arch.embed_dim * 4  # (1, N, D)
    attention = 0 if fused else blocks * batch * arch.num_heads * arch.tokens ** 2 * 4  # blocks x (B, H, N, N)
    text = (f"model.image_size={arch.image_size} at patch {arch.patch_size} is {arch.tokens:,} tokens per image "
            f"(224 px at patch 16: 197): the position embedding takes {_gib(pos_embed)}"
            + (f" and the attention probabilities {_gib(attention)} ({blocks} block(s) x batch {batch} x "
               f"{arch.num_heads} heads x {arch.tokens:,}^2 x 4 bytes)" if attention else ""))
    if pos_embed + attention > REFUSED_BYTES:
        raise ConfigError(f"{text}, more than any one device holds ({_gib(REFUSED_BYTES)} at most here); lower "
                          f"model.image_size" + (" or the batch size per device" if attention else ""))
    if arch.tokens > NOTED_TOKENS:
        notes.append(text)


def resolve_check_loss_only(device: str, amp_level: str, notes: List[str]) -> bool:
    """The step checks the loss alone for overflow in float32 off Ascend: nothing is unscaled, and float32
    gradients of a finite loss do not overflow; Ascend reads its float-status registers whatever the level."""
    loss_only = amp_level == "O0" and device != "Ascend"
    notes.append("overflow check: " + ("the loss alone (amp O0, float32 gradients of a finite loss stay finite)"
                                       if loss_only else "Ascend's float-status registers" if device == "Ascend"
                                       else f"every gradient (amp {amp_level})"))
    return loss_only


def resolve_plan(cfg: Config, runtime: Runtime, purpose: str = "train",
                 formulation: Optional[Mapping[str, str]] = None) -> RunPlan:
    """The frozen plan for `cfg` on `runtime`; `purpose` 'export' keeps the formulation portable.

    formulation: layer implementations to force instead of the device's choice (`parse_formulation`; only the
    benchmark times them: they compute the same function, so a run has no reason to pick them itself).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    notes: List[str] = []
    device = runtime.device_target
    amp_level = resolve_amp_level(cfg.amp.level, device)
    if cfg.amp.level == "auto":
        notes.append(f"amp.level=auto -> {amp_level} (O2 on Ascend, O0 elsewhere)")
    amp_dtype = resolve_amp_dtype(cfg, runtime, amp_level, notes)
    loss_scale = resolve_loss_scale(cfg, amp_level, amp_dtype, notes)
    compile_ = compile_settings(cfg, device)
    if cfg.train.jit_level == "auto":
        notes.append("train.jit_level=auto -> MindSpore's default")
    sink = _choose("train.sink_mode", cfg.train.sink_mode, "on" if device == "Ascend" else "off", "on", "off",
                   notes, device) == "on"
    if sink and device == "CPU":
        notes.append("train.sink_mode=on -> off on CPU: MindSpore's CPU backend trains step by step whatever it is "
                     "told, so the run is planned unsunk")
        sink = False
    batch, accum = batch_and_accumulation(cfg, runtime.world_size, notes)
    arch = resolve_architecture(cfg.model)
    chosen = _formulation(cfg, runtime, amp_level, purpose, notes, formulation or {})
    training = purpose == "train"
    recompute = cfg.train.recompute == "blocks" and training
    # a train step holds every block's attention probabilities for its backward pass (one at a time with recompute)
    check_input_size(arch, batch if training else cfg.eval.batch_size or batch,
                     arch.depth if training and not recompute else 1, chosen.attention == "fused", notes)
    if training and cfg.optim.warmup_epochs >= cfg.train.epochs:
        notes.append(f"optim.warmup_epochs={cfg.optim.warmup_epochs} is not shorter than train.epochs="
                     f"{cfg.train.epochs}: the schedule shortens the warmup to leave at least one epoch of cosine "
                     f"decay (none at all for one epoch), so the lr never follows the warmup you set")
    return RunPlan(arch=arch, formulation=chosen, device_target=device, mode=cfg.train.mode,
                   amp_level=amp_level, loss_scale=loss_scale,
                   loss_scale_value=cfg.amp.loss_scale_value, scale_window=cfg.amp.scale_window, sink_mode=sink,
                   recompute_blocks=recompute, rank=runtime.rank, world_size=runtime.world_size, batch_size=batch,
                   global_batch_size=batch * runtime.world_size * accum,
                   eval_batch_size=cfg.eval.batch_size or batch, accum_steps=accum, chip=runtime.chip,
                   amp_dtype=amp_dtype, jit_level=compile_.jit_level,
                   compile_cache_dir=compile_.compile_cache_dir if purpose == "train" else "",
                   memory=compile_.memory, check_loss_only=resolve_check_loss_only(device, amp_level, notes),
                   notes=notes)
