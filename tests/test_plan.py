"""vit_ms.plan: every 'auto' resolved once, per device, with the errors for combinations that cannot run."""
import json

import mindspore as ms
import pytest

from vit_ms.config_loader import load_config
from vit_ms.errors import ConfigError
from vit_ms.models import model_from_plan
from vit_ms.models.attention import DotProductAttention, FlashAttention
from vit_ms.models.handwritten import HandwrittenErfGELU, HandwrittenSoftmax
from vit_ms.plan import batch_and_accumulation, parse_formulation, resolve_plan
from vit_ms.runtime import Runtime


CHIPS = {"CPU": "", "GPU": "sm_90", "Ascend": "ascend910b"}  # the chip each device gets unless a test names one


def plan_for(device, *overrides, purpose="train", world_size=1, chip=None, formulation=()):
    runtime = Runtime(device, 0, world_size, CHIPS[device] if chip is None else chip)
    return resolve_plan(load_config("demo", list(overrides)), runtime, purpose, parse_formulation(formulation))


def test_each_device_gets_its_formulation_amp_and_sink_mode():
    cpu, gpu, ascend = plan_for("CPU"), plan_for("GPU"), plan_for("Ascend")
    assert (cpu.amp_level, cpu.loss_scale, cpu.sink_mode) == ("O0", "none", False)
    assert (cpu.formulation.patch_embed, cpu.formulation.attention, cpu.formulation.backward) == \
        ("matmul", "standard", "handwritten")
    assert (gpu.amp_level, gpu.formulation.backward, gpu.formulation.attention) == ("O0", "autodiff", "standard")
    assert (ascend.amp_level, ascend.amp_dtype, ascend.loss_scale, ascend.sink_mode) == ("O2", "bfloat16", "none", True)
    assert (ascend.formulation.patch_embed, ascend.formulation.attention) == ("conv", "fused")
    assert any("backward=auto -> handwritten" in note for note in cpu.notes)
    asked = plan_for("CPU", "train.sink_mode=on")  # MindSpore's CPU backend never sinks: planned as it runs
    assert not asked.sink_mode and any("train.sink_mode=on -> off on CPU" in note for note in asked.notes)
    assert plan_for("GPU", "train.sink_mode=on").sink_mode


def test_the_model_is_built_as_the_plan_says():
    cpu = model_from_plan(plan_for("CPU"))
    assert isinstance(cpu.blocks[0].mlp.act, HandwrittenErfGELU)
    assert isinstance(cpu.blocks[0].attn.attend, DotProductAttention)
    assert isinstance(cpu.blocks[0].attn.attend.softmax, HandwrittenSoftmax)
    ascend = model_from_plan(plan_for("Ascend"))  # built only: the flash-attention kernel runs on Ascend 910B/C
    assert all(isinstance(block.attn.attend, FlashAttention) for block in ascend.blocks)
    assert ascend.patch_embed.use_conv and not isinstance(ascend.blocks[0].mlp.act, HandwrittenErfGELU)
    assert [p.name for p in cpu.get_parameters()] == [p.name for p in ascend.get_parameters()]


def test_the_benchmarks_formulation_forces_any_layer_and_impossible_settings_are_refused():
    forced = plan_for("CPU", formulation=["patch_embed=conv", "backward=autodiff"])
    assert (forced.formulation.patch_embed, forced.formulation.backward) == ("conv", "autodiff")
    assert plan_for("GPU", formulation=["backward=handwritten"]).formulation.backward == "handwritten"
    for bad in (["backward"], ["backward=fast"], ["norms=half"]):
        with pytest.raises(ConfigError, match=r"--formulation .* must be one of patch_embed=matmul or conv; backward="):
            parse_formulation(bad)
    with pytest.raises(ConfigError, match="exists on Ascend 910B/910C .* this run is on CPU"):
        plan_for("CPU", "model.attention=fused")
    with pytest.raises(ConfigError, match="attn_drop_rate=0.1"):
        plan_for("Ascend", "model.attention=fused", "model.attn_drop_rate=0.1")
    assert plan_for("Ascend", "model.attn_drop_rate=0.1").formulation.attention == "standard"
    with pytest.raises(ConfigError, match="--formulation backward=handwritten .* O2"):
        plan_for("CPU", "amp.level=O2", formulation=["backward=handwritten"])
    assert plan_for("CPU", "amp.level=O2").formulation.backward == "autodiff"


def test_exports_and_inference_stay_portable():
    export = plan_for("Ascend", purpose="export")
    assert export.formulation.attention == "standard"
    assert plan_for("CPU", purpose="inference").formulation.backward == "autodiff"


def test_batches_and_the_architecture_are_resolved_once():
    plan = plan_for("CPU", "train.global_batch_size=64", world_size=4)
    assert (plan.batch_size, plan.global_batch_size, plan.eval_batch_size) == (16, 64, 16)
    assert (plan.arch.patch_size, plan.arch.embed_dim, plan.arch.depth, plan.arch.num_heads) == (8, 64, 4, 4)
    assert plan.arch.mlp_ratio == 2.0  # demo.yaml sets it; the variant default is 4
    record = json.loads(json.dumps(plan.to_dict()))  # as plan.json and checkpoints store it
    assert record["arch"]["embed_dim"] == 64 and record["formulation"]["backward"] == "handwritten"
    assert "batch 16 per device, 64 global" in plan.describe()


def test_gpu_gets_bias_gradients_as_gemms_and_any_device_can_force_them():
    assert plan_for("GPU").formulation.bias_grad == "gemm"
    assert plan_for("GPU", "amp.level=O2").formulation.bias_grad == "gemm"
    assert plan_for("CPU").formulation.bias_grad == "reduce" and plan_for("Ascend").formulation.bias_grad == "reduce"
    assert plan_for("CPU", formulation=["bias_grad=gemm"]).formulation.bias_grad == "gemm"
    from vit_ms.models.handwritten import BiasGemmLinear

    gpu = model_from_plan(plan_for("GPU"))
    assert isinstance(gpu.blocks[0].attn.qkv.function, BiasGemmLinear) and isinstance(gpu.head.function, BiasGemmLinear)


def test_recompute_blocks_marks_every_block_and_keeps_the_losses():
    import mindspore as ms
    import numpy as np

    from vit_ms.train.step import build_train_step
    from vit_ms.train.optim import build_optimizer

    assert not plan_for("CPU").recompute_blocks
    assert not plan_for("CPU", "train.recompute=blocks", purpose="inference").recompute_blocks
    losses = []
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        for setting in ("none", "blocks"):
            cfg = load_config("demo", [f"train.recompute={setting}", "model.depth=2", "data.mixup=0", "data.cutmix=0"])
            plan = resolve_plan(cfg, Runtime("CPU"))
            ms.set_seed(0)
            model = model_from_plan(plan)
            assert all(getattr(b, "_has_config_recompute", False) == (setting == "blocks") for b in model.blocks)
            step = build_train_step(model, build_optimizer(model, model.trainable_params(), cfg.optim, [1e-3] * 3),
                                    cfg, plan)
            x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
            y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
            losses.append([float(step(x, y)[0].asnumpy()) for _ in range(3)])
    finally:
        ms.set_context(mode=mode)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_global_batch_is_split_over_devices_or_rejected():
    cfg = load_config("vit_b16", ["train.global_batch_size=1024"])
    assert batch_and_accumulation(cfg, 8)[0] == 128
    per_device = load_config("vit_b16", ["train.global_batch_size=0"])  # train.batch_size is per device
    assert batch_and_accumulation(per_device, 8) == (128, 1)
    with pytest.raises(ConfigError, match=r"train.global_batch_size=1024 is not divisible by the 3 devices"):
        batch_and_accumulation(cfg, 3)


def test_norms_auto_is_half_for_gpu_under_o2_or_o3_only():
    for device, overrides, norms in [("GPU", ["amp.level=O2"], "half"), ("GPU", ["amp.level=O3"], "half"),
                                     ("GPU", [], "float32"),  # amp auto: O0 on GPU
                                     ("GPU", ["amp.level=O1"], "float32"), ("CPU", ["amp.level=O2"], "float32"),
                                     ("Ascend", [], "float32"),  # amp auto: O2 on Ascend
                                     ("GPU", ["amp.level=O2", "model.attn_drop_rate=0.1"], "float32")]:
        plan = plan_for(device, *overrides)
        assert plan.formulation.norms == norms, (device, overrides)
        assert any(note.startswith(f"amp.norms=auto -> {norms} (") for note in plan.notes), plan.notes
    gpu = plan_for("GPU", "amp.level=O2")
    assert "H100" in next(note for note in gpu.notes if note.startswith("amp.norms"))
    assert json.loads(json.dumps(gpu.to_dict()))["formulation"]["norms"] == "half" and "norms half" in gpu.describe()


def test_norms_can_be_forced_under_o2_or_o3_and_are_refused_without_a_half_type():
    cpu = plan_for("CPU", "amp.level=O2", "amp.norms=half")
    assert cpu.formulation.norms == "half" and not any(n.startswith("amp.norms") for n in cpu.notes)
    assert plan_for("GPU", "amp.level=O2", "amp.norms=float32").formulation.norms == "float32"
    assert plan_for("Ascend", "amp.norms=half").formulation.norms == "half"
    assert plan_for("CPU", "amp.norms=float32").formulation.norms == "float32"
    for level in ("O0", "O1"):
        with pytest.raises(ConfigError, match=rf"amp.norms=half .* amp.level resolves to {level}.*amp.level=O2 or O3"):
            plan_for("CPU", f"amp.level={level}", "amp.norms=half")
    with pytest.raises(ConfigError, match=r"amp.norms=half .* resolves to O0"):
        plan_for("GPU", "amp.norms=half")  # amp auto: O0 on GPU
    with pytest.raises(ConfigError, match=r"'amp.norms' must be 'auto' or 'half' or 'float32', got 'fp16'"):
        plan_for("GPU", "amp.norms=fp16")


def test_the_plans_norms_reach_every_layer_norm_and_softmax():
    from vit_ms.models.layers import Float32UnderAmp

    for norms in ("half", "float32"):
        model = model_from_plan(plan_for("CPU", "amp.level=O2", f"amp.norms={norms}"))
        layers = [c for _, c in model.cells_and_names() if isinstance(c, Float32UnderAmp)]
        assert len(layers) == 2 * 4 + 1 + 4  # norm1, norm2 per block, the final norm, a softmax per block
        assert all(layer.half == (norms == "half") for layer in layers)


@pytest.mark.parametrize("norms", ["float32", "half"])
def test_an_o2_train_step_runs_in_graph_mode_with_either_norms(norms):
    import mindspore as ms
    import numpy as np

    from vit_ms.train.step import build_train_step
    from vit_ms.train.optim import build_optimizer

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        cfg = load_config("demo", ["amp.level=O2", f"amp.norms={norms}", "amp.loss_scale=fixed",
                                   "amp.loss_scale_value=1024", "model.depth=2", "data.mixup=0", "data.cutmix=0"])
        plan = resolve_plan(cfg, Runtime("CPU"))
        ms.set_seed(0)
        model = model_from_plan(plan)
        step = build_train_step(model, build_optimizer(model, model.trainable_params(), cfg.optim, [1e-3] * 3),
                                cfg, plan)
        x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
        y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
        losses = [step(x, y) for _ in range(3)]
    finally:
        ms.set_context(mode=mode)
    assert all(not bool(overflow.asnumpy()) for _, overflow, _ in losses)
    assert all(np.isfinite(float(loss.asnumpy())) for loss, _, _ in losses)
    assert float(losses[-1][0].asnumpy()) < float(losses[0][0].asnumpy())  # it trains


# ---- the chip in the plan: attention, amp dtype, loss scale -------------------------------------------------------


def test_fused_attention_only_where_the_kernel_exists():
    for chip in ("ascend910b", "ascend910_93"):  # Atlas A2, A3
        plan = plan_for("Ascend", chip=chip)
        assert plan.formulation.attention == "fused" and plan.chip == chip
        assert any(n.startswith("model.attention=auto -> fused (FlashAttentionScore on Ascend 910") for n in plan.notes)
    for device, chip in (("Ascend", "ascend910"), ("Ascend", ""), ("GPU", "sm_90"), ("CPU", "")):
        assert plan_for(device, chip=chip).formulation.attention == "standard", (device, chip)
    first_gen = plan_for("Ascend", chip="ascend910")
    assert "no FlashAttentionScore kernel on Ascend 910A" in " ".join(first_gen.notes)
    assert "Ascend 910A (Atlas training series, first generation)" in first_gen.describe()


def test_fused_attention_forced_elsewhere_is_refused_naming_the_chip():
    for device, chip, named in (("Ascend", "ascend910", "Ascend 910A"), ("GPU", "sm_90", "GPU sm_90"),
                                ("CPU", "", "CPU"), ("Ascend", "", r"Ascend \(chip not reported")):
        with pytest.raises(ConfigError, match=f"model.attention=fused .* 910B/910C .* this run is on {named}"):
            plan_for(device, "model.attention=fused", chip=chip)
    assert plan_for("Ascend", "model.attention=fused", purpose="export", chip="ascend910").formulation.attention \
        == "standard"  # exports never carry the kernel


def test_head_dim_outside_the_kernels_limits_gets_standard_attention_or_an_error():
    odd = ("model.embed_dim=72", "model.num_heads=4")  # head dim 18: not a multiple of 16
    plan = plan_for("Ascend", *odd)
    assert plan.formulation.attention == "standard"
    assert any("head dim 18" in n and n.startswith("model.attention=auto -> standard") for n in plan.notes)
    with pytest.raises(ConfigError, match="head dim 18 .* multiple of 16 up to 512"):
        plan_for("Ascend", "model.attention=fused", *odd)
    assert plan_for("Ascend", "model.embed_dim=64", "model.num_heads=2").formulation.attention == "fused"  # dim 32


def test_amp_o0_on_ascend_keeps_standard_attention_or_notes_the_float16_kernel():
    auto = plan_for("Ascend", "amp.level=O0")
    assert auto.formulation.attention == "standard" and auto.amp_dtype == "float32" and auto.loss_scale == "none"
    assert any("would compute attention in float16" in n for n in auto.notes)
    forced = plan_for("Ascend", "amp.level=O0", "model.attention=fused")
    assert forced.formulation.attention == "fused"
    assert any("kernel takes float16 only, so attention computes in float16" in n for n in forced.notes)


def test_amp_dtype_auto_is_bfloat16_on_910b_and_910c_float16_elsewhere_with_its_loss_scale():
    for device, chip, level, dtype, scale in (("Ascend", "ascend910b", "auto", "bfloat16", "none"),
                                              ("Ascend", "ascend910_93", "O3", "bfloat16", "none"),
                                              ("Ascend", "ascend910", "auto", "float16", "dynamic"),
                                              ("GPU", "sm_90", "O2", "float16", "dynamic"),
                                              ("CPU", "", "O1", "float16", "dynamic"),
                                              ("CPU", "", "auto", "float32", "none")):  # O0: nothing cast
        plan = plan_for(device, f"amp.level={level}", chip=chip)
        assert (plan.amp_dtype, plan.loss_scale) == (dtype, scale), (device, chip, level)
    bf16 = plan_for("Ascend", chip="ascend910b")
    assert "amp.loss_scale=auto -> none (bfloat16 has float32's exponent range" in " ".join(bf16.notes)
    assert "amp O2 bfloat16, loss scale none" in bf16.describe()
    assert plan_for("Ascend", "amp.dtype=float16", chip="ascend910b").loss_scale == "dynamic"
    assert plan_for("Ascend", "amp.loss_scale=fixed", chip="ascend910b").loss_scale == "fixed"  # asked for


def test_bfloat16_is_refused_where_the_device_cannot_run_it():
    for device, chip, named in (("CPU", "", "CPU"), ("Ascend", "ascend910", "Ascend 910A"), ("GPU", "sm_90", "GPU")):
        with pytest.raises(ConfigError, match=f"amp.dtype=bfloat16 .* 910B/910C .* this run is on {named}.*"
                                              f"amp.dtype=float16 or auto"):
            plan_for(device, "amp.level=O2", "amp.dtype=bfloat16", chip=chip)
    with pytest.raises(ConfigError, match="amp.dtype=bfloat16 casts nothing at amp.level O0"):
        plan_for("Ascend", "amp.level=O0", "amp.dtype=bfloat16")


def test_bfloat16_o2_keeps_norms_softmax_and_parameters_in_float32():
    from vit_ms.models.layers import Float32UnderAmp
    from vit_ms.models import apply_amp

    plan = plan_for("Ascend", chip="ascend910b")  # built, not run: CPU has no bfloat16 matmul
    model = model_from_plan(plan)
    net = apply_amp(model, plan)
    cells = dict(model.cells_and_names())
    kept = [c for c in cells.values() if isinstance(c, Float32UnderAmp)]
    assert kept and all(c.get_flags().get("fp32") and not c.get_flags().get("bf16") for c in kept)
    assert cells["blocks.0.mlp.fc1"].get_flags().get("bf16") and cells["head"].get_flags().get("bf16")
    assert {p.dtype for p in net.get_parameters()} == {ms.float32}  # checkpoints stay float32


# ---- compile level, compile cache, memory pool -------------------------------------------------------------------


def test_compile_and_memory_settings_are_resolved_and_noted():
    default = plan_for("CPU")
    assert (default.jit_level, default.compile_cache_dir, default.memory) == ("", "", {})
    assert "train.jit_level=auto -> MindSpore's default" in default.notes
    assert "jit level default, compile cache off" in default.describe()
    plan = plan_for("CPU", "train.jit_level=O1", "train.compile_cache=true", "output_dir=/tmp/r", "run_name=x",
                    "memory.max_size=20GB", "memory.optimize_level=O1")
    assert plan.jit_level == "O1" and plan.compile_cache_dir == "/tmp/r/x/compile_cache"
    assert plan.memory == {"max_size": "20GB", "optimize_level": "O1"}
    assert "compile cache /tmp/r/x/compile_cache, memory {'max_size': '20GB'" in plan.describe()
    assert plan_for("CPU", "train.compile_cache=true", purpose="inference").compile_cache_dir == ""
    assert plan_for("Ascend", "train.jit_level=O2").jit_level == "O2"
    with pytest.raises(ConfigError, match="train.jit_level=O2 .* Ascend in graph mode only; this run is CPU"):
        plan_for("CPU", "train.jit_level=O2")
    with pytest.raises(ConfigError, match="memory.init_size='2G' must be a size in GB .* e.g. \"32GB\""):
        plan_for("CPU", "memory.init_size=2G")


# ---- decided in the plan: the step's overflow check, input sizes, the warmup ------------------------------------


def test_the_overflow_check_reads_the_loss_alone_only_in_float32_off_ascend():
    cpu, gpu_o2, ascend_o0 = plan_for("CPU"), plan_for("GPU", "amp.level=O2"), plan_for("Ascend", "amp.level=O0")
    assert (cpu.check_loss_only, gpu_o2.check_loss_only, ascend_o0.check_loss_only) == (True, False, False)
    assert "overflow check: the loss alone (amp O0, float32 gradients of a finite loss stay finite)" in cpu.notes
    assert "overflow check: every gradient (amp O2)" in gpu_o2.notes
    assert "overflow check: Ascend's float-status registers" in ascend_o0.notes
    assert plan_for("GPU").check_loss_only  # amp auto: O0 on GPU


def test_an_image_size_no_device_holds_is_refused_with_the_estimate_before_anything_is_built():
    with pytest.raises(ConfigError, match=r"model.image_size=100000 at patch 16 is 39,062,501 tokens per image .*"
                                          r"position embedding takes .* GiB and the attention probabilities .* GiB "
                                          r".*more than any one device holds .*lower model.image_size"):
        plan_for("CPU", "model.image_size=100000", "model.patch_size=16")
    with pytest.raises(ConfigError, match="4,097 tokens .* more than any one device holds"):  # 12 blocks x 256
        plan_for("CPU", "model.image_size=1024", "model.patch_size=16", "train.batch_size=256")


def test_many_tokens_are_noted_with_the_estimate():
    plan = plan_for("CPU", "model.image_size=4096", "model.patch_size=16", "train.batch_size=1", purpose="inference")
    note = next(n for n in plan.notes if n.startswith("model.image_size=4096"))
    assert "65,537 tokens per image" in note and "1 block(s) x batch 1" in note, note
    assert not any(n.startswith("model.image_size=") for n in plan_for("CPU").notes)


def test_a_warmup_as_long_as_the_run_is_noted():
    plan = plan_for("CPU", "train.epochs=3", "optim.warmup_epochs=5")
    assert any(n.startswith("optim.warmup_epochs=5 is not shorter than train.epochs=3") for n in plan.notes)
    assert not any(n.startswith("optim.warmup_epochs") for n in plan_for("CPU", "train.epochs=6").notes)
