"""vit_ms.tools.dryrun and python -m vit_ms.doctor --dry-run: the real train step compiled for Ascend 910A/910B
on this CPU (MindSpore's dry run, MS_SIMULATION_LEVEL=1, with stand-in CANN libraries built by g++), and what the
doctor makes of the result.

Each compile case runs small-depth variants of the shipped configs at two batch sizes per device and asserts
that both compile and that the planned peak memory grows with the batch.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vit_ms import doctor
from vit_ms.config import config_to_dict
from vit_ms.config_loader import load_config
from vit_ms.errors import UserError
from vit_ms.models import model_from_plan
from vit_ms.plan import resolve_plan
from vit_ms.runtime import Runtime
from vit_ms.tools import cann_standins, dryrun
from vit_ms.tools.dryrun import DryRunResult, dry_run, libraries_for, parse_output
from vit_ms.train.checkpoint import CheckpointMeta, TrainState, save_checkpoint

SMALL = ["model.depth=1", "train.global_batch_size=0", "train.accum_steps=1"]  # one block, one micro-batch
BATCHES = (8, 16)


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    """Stand-in CANN libraries for the whole session (seconds to build); skips where g++ is missing."""
    if cann_standins.compiler() is None:
        pytest.skip("g++ is not installed: the stand-in CANN libraries of the dry run are compiled with it")
    return cann_standins.build(tmp_path_factory.mktemp("cann-standins"))


def compiled_at_two_batches(config, overrides, chip, standins, ranks=1):
    """The dry run at each of BATCHES: both compile, and the peak (with fragments) grows with the batch."""
    results = [dry_run(config, [*SMALL, *overrides, f"train.batch_size={b}"], chip, ranks, standins)
               for b in BATCHES]
    for batch, result in zip(BATCHES, results):
        assert result.compiled, f"batch {batch}: {result.stage}: {result.error}"
        assert result.fits and result.peak_mb > 0
    assert results[1].actual_mb > results[0].actual_mb, [r.actual_mb for r in results]
    return results


def test_910b_bfloat16_fused_attention_no_loss_scale_sink_on(standins):
    """The tensor `if` that skips an overflowed update builds at O0 (it stopped with "Can not build a sub graph
    which contains ConditionSwitch" while the runtime had one actor thread)."""
    small, _ = compiled_at_two_batches("vit_b16.yaml", [], "910b", standins)
    for choice in ("amp O2 bfloat16", "loss scale none", "sink on", "attention fused", "x1 (rank 0)"):
        assert choice in small.plan
    assert small.jit_level == "O0" and not any("unchecked" in n for n in small.notes)


def test_910a_float16_dynamic_loss_scale_standard_attention_checked_at_o0(standins):
    small, _ = compiled_at_two_batches("vit_s16.yaml", [], "910a", standins)
    for choice in ("Ascend 910A", "amp O2 float16", "loss scale dynamic", "attention standard"):
        assert choice in small.plan
    assert small.jit_level == "O0"
    assert any("jit_level O2" in n and "unchecked" in n for n in small.notes)  # MindSpore's default there
    assert "O2" in small.report() and "unchecked" in small.report()


def test_gradient_accumulation_with_the_float_status_overflow_check(standins):
    """Ascend reads overflow from float-status registers through MindSpore's base class; with accumulation the
    step's super() call recursed at compile ("Exceed function call depth limit 1000")."""
    small, _ = compiled_at_two_batches("vit_s16.yaml", ["train.accum_steps=2"], "910a", standins)
    assert "x 2 accumulated" in small.plan


@pytest.mark.slow
def test_ema(standins):
    small, _ = compiled_at_two_batches("vit_s16.yaml", ["train.ema=true"], "910b", standins)


@pytest.mark.slow
def test_recompute_plans_less_memory_than_keeping_activations(standins):
    """Two blocks: while one is recomputed in the backward, the other's activations are not kept."""
    two = ["model.depth=2", f"train.batch_size={BATCHES[1]}"]
    kept = dry_run("vit_b16.yaml", [*SMALL, *two], "910b", 1, standins)
    _, recomputed = compiled_at_two_batches("vit_b16.yaml", ["model.depth=2", "train.recompute=blocks"], "910b",
                                            standins)
    assert "recompute blocks" in recomputed.plan
    assert recomputed.actual_mb < kept.actual_mb, (recomputed.actual_mb, kept.actual_mb)


@pytest.mark.slow
def test_distilled_student_with_a_vit_teacher(standins, tmp_path):
    teacher_cfg = load_config("vit_s16.yaml", ["model.depth=1"])
    teacher = model_from_plan(resolve_plan(teacher_cfg, Runtime("CPU")))
    save_checkpoint(teacher, tmp_path / "teacher.ckpt", TrainState(), CheckpointMeta(config_to_dict(teacher_cfg)))
    teacher_spec = [f"distill.teacher={tmp_path / 'teacher.ckpt'}", "distill.teacher_weights="]
    small, _ = compiled_at_two_batches("deit_b16_distilled.yaml", teacher_spec, "910b", standins)
    assert "vit_b16" in small.plan  # the student; its distillation head learns from the ViT teacher


@pytest.mark.slow
def test_rank_0_of_8_data_parallel_ranks(standins):
    small, _ = compiled_at_two_batches("vit_b16.yaml", [], "910b", standins, ranks=8)
    assert "x8 (rank 0)" in small.plan


def test_the_doctor_dry_run_prints_the_memory_and_a_json_line_last(standins):
    proc = subprocess.run([sys.executable, "-m", "vit_ms.doctor", "--dry-run", "910b", "--config", "vit_s16.yaml",
                           "--set", "model.depth=1", "--set", "train.global_batch_size=0", "--set",
                           "train.batch_size=8", "--standins", str(standins.lib_dir.parents[1])],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["compiled"] and result["fits"] and result["device_mb"] == 64 * 1024 and result["peak_mb"] > 0
    text = "\n".join(lines[:-1])
    for part in ("plan: ", "compiled in", "peak device memory", "device memory: 65,536 MB", "headroom"):
        assert part in text


# ---- no compile: the parts around it ---------------------------------------------------------------------------


MINDSPORE_TAIL = """[WARNING] DEVICE ... Ascend Memory Adapter deinitialize success, statistics:
Device MOC memory size: 65536M
MindSpore Used memory size: 61430M
Used peak memory usage (without fragments): 8197M
Actual peak memory usage (with fragments): 9093M
"""


def result_line(**fields):
    found = {"compiled": True, "seconds": 3.5, "plan": "vit_b16 ...", "jit_level": "O0", "notes": [], **fields}
    return dryrun.RESULT_MARK + json.dumps(found) + "\n"


def test_the_peak_lines_and_the_childs_result_are_parsed():
    result = parse_output(result_line() + MINDSPORE_TAIL, DryRunResult("910b", 8, compiled=False))
    assert (result.compiled, result.peak_mb, result.actual_mb, result.seconds) == (True, 8197, 9093, 3.5)
    assert result.fits and result.headroom_mb == result.usable_mb - 9093 and result.advice() == ""
    record = result.to_dict()
    assert {"compiled", "peak_mb", "device_mb", "fits"} <= set(record) and record["stage"] == ""


def test_a_peak_over_the_device_is_a_memory_failure_with_what_to_change():
    tail = MINDSPORE_TAIL.replace("9093M", "40000M")
    result = parse_output(result_line() + tail, DryRunResult("910a", 1, compiled=False))
    assert result.compiled and not result.fits and result.stage == "memory"
    assert result.to_dict()["stage"] == "memory"
    assert "train.batch_size" in result.advice() and "train.recompute=blocks" in result.advice()


@pytest.mark.parametrize("error, stage", [
    ("Exceed function call depth limit 1000\nmindspore/ccsrc/frontend/jit/ps/static_analysis/evaluator.cc:238",
     "front end"),
    ("Can not build a sub graph which contains ConditionSwitch or ConditionSwitch by kbk.\n"
     "mindspore/ccsrc/backend/ms_backend/runtime/graph_scheduler/base/graph_scheduler.cc:1959 BuildKernelActor",
     "backend"),
])
def test_a_compile_error_names_its_stage(error, stage):
    result = parse_output(result_line(compiled=False, error=error), DryRunResult("910b", 1, compiled=False))
    assert not result.fits and result.stage == stage
    assert result.advice().startswith(f"{stage}: ") and error.splitlines()[0] in result.advice()


def test_a_child_that_died_without_a_result_is_a_failure_with_its_last_lines():
    result = parse_output("Traceback ...\nImportError: libascendcl.so: cannot open shared object file",
                          DryRunResult("910b", 1, compiled=False))
    assert not result.compiled and "libascendcl.so" in result.error


def test_without_cann_or_standins_the_message_says_what_is_missing_and_how_to_build_them(tmp_path):
    with pytest.raises(UserError, match="libascendcl.so is not on LD_LIBRARY_PATH.*vit_ms.cann_standins"):
        libraries_for(None, {"LD_LIBRARY_PATH": str(tmp_path)})
    with pytest.raises(UserError, match="no stand-in CANN libraries there.*python -m vit_ms.cann_standins"):
        libraries_for(str(tmp_path), {})
    (tmp_path / "cann" / "lib64").mkdir(parents=True)
    (tmp_path / "cann" / "lib64" / "libascendcl.so").write_bytes(b"")
    assert libraries_for(None, {"LD_LIBRARY_PATH": f"/nowhere:{tmp_path / 'cann' / 'lib64'}"}) is None  # CANN


def test_the_standins_define_every_listed_symbol_and_real_objects_where_mindspore_reads_them():
    names = cann_standins.symbols()
    source = cann_standins.stub_source(names)
    assert len(names) > 1000 and len(set(names)) == len(names)
    assert all(f" {name}(" in source for name in names)
    assert 'getenv("FAKE_CANN_SOC")' in source and "new (out) standin::Operator()" in source


def test_the_standins_build_and_their_environment_points_the_plugin_at_them(standins):
    assert standins.complete() and "latest" in str(standins.lib_dir)
    env = standins.environ({"LD_LIBRARY_PATH": "/x", "PYTHONPATH": ""})
    assert env["LD_LIBRARY_PATH"] == f"{standins.lib_dir}:/x" and env["PYTHONPATH"] == str(standins.py_dir)
    nm = subprocess.run(["nm", "-D", str(standins.lib_dir / "libascendcl.so")], capture_output=True, text=True)
    assert nm.returncode != 0 or " T aclrtMalloc" in nm.stdout


def test_dry_run_flags_are_checked_before_anything_compiles(capsys):
    with pytest.raises(UserError, match="--ranks and --standins belong to a dry run"):
        doctor.main(["--ranks", "8"])
    with pytest.raises(UserError, match="--ranks 0"):
        doctor.main(["--dry-run", "910b", "--ranks", "0", "--config", "demo.yaml"])
    with pytest.raises(SystemExit):
        doctor.main(["--dry-run", "910x"])
    assert "invalid choice: '910x'" in capsys.readouterr().err


def test_an_ascend_node_runs_the_dry_run_before_the_tiny_training(monkeypatch):
    cfg = load_config("demo.yaml")
    assert doctor.ascend_preflight(cfg, "demo.yaml", []) == []  # this CPU: no dry run
    calls = []

    def fake_dry_run(config, overrides, chip, ranks=1, standins=None):
        calls.append((config, chip, ranks, standins))
        peak = 70000 if chip == "910a" else 9000
        return parse_output(result_line() + MINDSPORE_TAIL.replace("9093M", f"{peak}M"),
                            DryRunResult(chip, ranks, compiled=False))

    monkeypatch.setattr(doctor, "dry_run", fake_dry_run)
    monkeypatch.setattr(doctor, "resolve_device_target", lambda choice: "Ascend")
    monkeypatch.setattr(doctor, "read_chip", lambda target, device_id: ("ascend910b", "Ascend910B3"))
    [check] = doctor.ascend_preflight(cfg, "demo.yaml", ["train.batch_size=8"])
    assert calls == [("demo.yaml", "910b", 1, None)]  # the node's own CANN
    assert (check.name, check.status) == ("dry run", "ok") and "9,000 MB" in check.detail
    failed = doctor.node_dry_run("demo.yaml", [], "ascend910")
    assert failed.status == "fail" and "train.batch_size" in failed.fix
    assert doctor.node_dry_run("demo.yaml", [], "ascend310p").status == "warn"
