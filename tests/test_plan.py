"""vit_ms.plan: every 'auto' resolved once, per device, with the errors for combinations that cannot run."""
import json

import pytest

from vit_ms.config import load_config
from vit_ms.errors import ConfigError
from vit_ms.models import model_from_plan
from vit_ms.models.attention import DotProductAttention, FlashAttention
from vit_ms.models.handwritten import HandwrittenErfGELU, HandwrittenSoftmax
from vit_ms.plan import batch_and_accumulation, resolve_plan
from vit_ms.runtime import Runtime


CHIPS = {"CPU": "", "GPU": "sm_90", "Ascend": "ascend910b"}  # the chip each device gets unless a test names one


def plan_for(device, *overrides, purpose="train", world_size=1, chip=None):
    runtime = Runtime(device, 0, world_size, CHIPS[device] if chip is None else chip)
    return resolve_plan(load_config("demo", list(overrides)), runtime, purpose)


def test_each_device_gets_its_formulation_amp_and_sink_mode():
    cpu, gpu, ascend = plan_for("CPU"), plan_for("GPU"), plan_for("Ascend")
    assert (cpu.amp_level, cpu.loss_scale, cpu.sink_mode) == ("O0", "none", False)
    assert (cpu.formulation.patch_embed, cpu.formulation.attention, cpu.formulation.backward) == \
        ("matmul", "standard", "handwritten")
    assert (gpu.amp_level, gpu.formulation.backward, gpu.formulation.attention) == ("O0", "autodiff", "standard")
    assert (ascend.amp_level, ascend.amp_dtype, ascend.loss_scale, ascend.sink_mode) == ("O2", "bfloat16", "none", True)
    assert (ascend.formulation.patch_embed, ascend.formulation.attention) == ("conv", "fused")
    assert any("model.backward=auto -> handwritten" in note for note in cpu.notes)


def test_the_model_is_built_as_the_plan_says():
    cpu = model_from_plan(plan_for("CPU"))
    assert isinstance(cpu.blocks[0].mlp.act, HandwrittenErfGELU)
    assert isinstance(cpu.blocks[0].attn.attend, DotProductAttention)
    assert isinstance(cpu.blocks[0].attn.attend.softmax, HandwrittenSoftmax)
    ascend = model_from_plan(plan_for("Ascend"))  # built only: the flash-attention kernel runs on Ascend 910B/C
    assert all(isinstance(block.attn.attend, FlashAttention) for block in ascend.blocks)
    assert ascend.patch_embed.use_conv and not isinstance(ascend.blocks[0].mlp.act, HandwrittenErfGELU)
    assert [p.name for p in cpu.get_parameters()] == [p.name for p in ascend.get_parameters()]


def test_explicit_settings_force_any_formulation_and_impossible_ones_are_refused():
    forced = plan_for("CPU", "model.patch_embed=conv", "model.backward=autodiff")
    assert (forced.formulation.patch_embed, forced.formulation.backward) == ("conv", "autodiff")
    assert plan_for("GPU", "model.backward=handwritten").formulation.backward == "handwritten"
    with pytest.raises(ConfigError, match="exists on Ascend 910B/910C .* this run is on CPU"):
        plan_for("CPU", "model.attention=fused")
    with pytest.raises(ConfigError, match="attn_drop_rate=0.1"):
        plan_for("Ascend", "model.attention=fused", "model.attn_drop_rate=0.1")
    assert plan_for("Ascend", "model.attn_drop_rate=0.1").formulation.attention == "standard"
    with pytest.raises(ConfigError, match="model.backward=handwritten .* O2"):
        plan_for("CPU", "model.backward=handwritten", "amp.level=O2")
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
    assert plan_for("CPU", "model.bias_grad=gemm").formulation.bias_grad == "gemm"
    from vit_ms.models.handwritten import BiasGemmLinear

    gpu = model_from_plan(plan_for("GPU"))
    assert isinstance(gpu.blocks[0].attn.qkv.function, BiasGemmLinear) and isinstance(gpu.head.function, BiasGemmLinear)


def test_recompute_blocks_marks_every_block_and_keeps_the_losses():
    import mindspore as ms
    import numpy as np

    from vit_ms.train.engine import build_train_step
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

    from vit_ms.train.engine import build_train_step
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
