"""vit_ms.runtime: the chip as MindSpore reports it, and the compile, cache and memory settings handed to it."""
import inspect
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mindspore as ms
import pytest

import vit_ms.runtime as runtime
from vit_ms.config_loader import load_config
from vit_ms.environment import mindspore_environment_problems
from vit_ms.errors import ConfigError, UserError
from vit_ms.runtime import (Runtime, apply_compile_settings, compile_settings, graph_fingerprint,
                            launched_distributed, read_chip, setup_runtime, use_compile_cache)

ROOT = Path(__file__).resolve().parent.parent


def test_cpu_runtime_has_no_chip_and_the_gpu_chip_is_its_compute_capability(monkeypatch):
    assert setup_runtime(load_config("demo")) == Runtime("CPU", 0, 1, "", "")
    assert read_chip("CPU", 0) == ("", "")
    monkeypatch.setattr(ms.hal, "get_device_capability", lambda device_id, target: (9, 0))
    monkeypatch.setattr(ms.hal, "get_device_name", lambda device_id, target: "NVIDIA H100 80GB HBM3")
    assert read_chip("GPU", 3) == ("sm_90", "NVIDIA H100 80GB HBM3")


def test_the_ascend_chip_is_mindspores_soc_version(monkeypatch):
    class FakeContext:  # stands in for MindSpore's C++ context: its SoC version, as CANN names the chip family
        @staticmethod
        def get_instance():
            return FakeContext()

        def get_ascend_soc_version(self):
            return "ascend910b"

    def no_name(device_id, target):
        raise RuntimeError("device_target Ascend not exist.")  # what a build without the Ascend plugin says

    monkeypatch.setattr(runtime, "MSContext", FakeContext)
    monkeypatch.setattr(ms.hal, "get_device_name", no_name)
    assert read_chip("Ascend", 0) == ("ascend910b", "")  # the name is for reports; the chip decides


def test_compile_settings_follow_the_config(tmp_path):
    cfg = load_config("demo", ["train.jit_level=O1", "train.compile_cache=true", f"output_dir={tmp_path}",
                               "run_name=r", "memory.max_size=30GB", "memory.init_size=1GB",
                               "memory.optimize_level=O1"])
    settings = compile_settings(cfg, "CPU")
    assert settings.jit_level == "O1" and settings.compile_cache_dir == str(tmp_path / "r" / "compile_cache")
    assert settings.memory == {"init_size": "1GB", "max_size": "30GB", "optimize_level": "O1"}
    default = compile_settings(load_config("demo"), "GPU")
    assert (default.jit_level, default.compile_cache_dir, default.memory) == ("", "", {})
    with pytest.raises(ConfigError, match="train.jit_level=O2 .* this run is Ascend in pynative mode"):
        compile_settings(load_config("demo", ["train.jit_level=O2", "train.mode=pynative"]), "Ascend")


def test_memory_and_jit_level_reach_mindspore_with_its_own_signature(monkeypatch):
    """The jit level is recorded, not set: MindSpore keeps jit_config for the whole process (set_context cannot
    put it back), and a CPU process left at O1 fails to compile later tests' cells with a custom bprop."""
    calls, contexts = [], []
    real = inspect.signature(ms.runtime.set_memory)
    monkeypatch.setattr(ms.runtime, "set_memory", lambda **kw: calls.append(real.bind(**kw).arguments))
    monkeypatch.setattr(ms, "set_context", lambda **kw: contexts.append(kw))
    monkeypatch.setattr(runtime, "_memory_applied", {})
    apply_compile_settings(runtime.CompileSettings("O1", "", {"max_size": "30GB", "optimize_level": "O1"}))
    assert contexts == [{"jit_config": {"jit_level": "O1"}}]
    assert "jit_config" in ms.context._context().setters  # a key MindSpore's set_context takes
    assert calls == [{"max_size": "30GB", "optimize_level": "O1"}]
    apply_compile_settings(runtime.CompileSettings("", "", {"max_size": "30GB", "optimize_level": "O1"}))
    assert len(calls) == 1  # the same settings again: MindSpore takes them once per process
    with pytest.raises(ConfigError, match="memory.* was already set .* start a new process"):
        apply_compile_settings(runtime.CompileSettings("", "", {"max_size": "20GB"}))


def test_the_compile_cache_is_kept_per_fingerprint(tmp_path):
    """MindSpore's cache does not see parameter shapes: a graph cached for a 3-step lr table crashed when loaded
    for 6 steps. Another config, plan or epoch length must get another folder; the same ones the same folder."""
    env = {}
    base = tmp_path / "compile_cache"
    one = use_compile_cache(str(base), {"config": {"train": {"epochs": 1}}, "steps_per_epoch": 3}, env)
    assert env == {"MS_COMPILER_CACHE_ENABLE": "1", "MS_COMPILER_CACHE_PATH": str(one)} and one.is_dir()
    assert one.parent == base
    assert use_compile_cache(str(base), {"steps_per_epoch": 3, "config": {"train": {"epochs": 1}}}, {}) == one
    assert use_compile_cache(str(base), {"config": {"train": {"epochs": 2}}, "steps_per_epoch": 3}, {}) != one
    assert use_compile_cache(str(base), {"config": {"train": {"epochs": 1}}, "steps_per_epoch": 4}, {}) != one


def test_a_compile_cache_folder_that_cannot_be_written_means_an_uncached_run_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    for base in (blocker / "compile_cache", "/proc/vit_ms_compile_cache"):  # read-only for root too
        env = {"MS_COMPILER_CACHE_ENABLE": "1", "MS_COMPILER_CACHE_PATH": "/an/earlier/runs/cache"}
        with caplog.at_level("WARNING", logger="vit_ms"):
            assert use_compile_cache(str(base), {"steps_per_epoch": 3}, env) is None
        assert env == {}
        assert "this run compiles its graphs without the cache" in caplog.text and str(base) in caplog.text


def test_the_graph_fingerprint_covers_the_teachers_architecture_and_the_class_count():
    from mindspore import nn  # the teachers are cells

    config, plan = {"distill": {"teacher": "runs/t/best.ckpt"}}, {"arch": {"num_classes": 3}}
    small, large = nn.Dense(8, 3), nn.Dense(16, 3)  # two teachers copied onto the same path
    base = use_compile_cache_digest(graph_fingerprint(config, plan, 5, 3, small))
    assert base == use_compile_cache_digest(graph_fingerprint(config, plan, 5, 3, nn.Dense(8, 3)))
    assert base != use_compile_cache_digest(graph_fingerprint(config, plan, 5, 3, large))
    assert base != use_compile_cache_digest(graph_fingerprint(config, plan, 5, 4, small))
    assert base != use_compile_cache_digest(graph_fingerprint(config, plan, 5, 3))
    assert graph_fingerprint(config, {**plan, "notes": ["x"]}, 5, 3)["plan"]["notes"] == []


def use_compile_cache_digest(fingerprint):
    with tempfile.TemporaryDirectory() as base:
        return use_compile_cache(base, fingerprint, {}).name


@pytest.mark.parametrize("name, value", [("DEVICE_ID", "abc"), ("DEVICE_ID", "-1"), ("RANK_SIZE", "two"),
                                         ("RANK_ID", "1.5"), ("MS_WORKER_NUM", "0"), ("MS_SCHED_PORT", "70000")])
def test_malformed_launcher_numbers_are_one_paragraph_naming_the_variable(name, value):
    with pytest.raises(UserError, match=rf"environment variable {name}='{value}' must be a whole number of at least"):
        setup_runtime(load_config("demo"), {name: value})
    if name == "RANK_SIZE":
        with pytest.raises(UserError, match="RANK_SIZE='two'"):
            launched_distributed({"RANK_TABLE_FILE": "/x.json", "RANK_SIZE": "two"})


@pytest.mark.parametrize("env, message", [
    ({"GLOG_v": "abc"}, "GLOG_v='abc' must be a MindSpore log level: 0 (DEBUG)"),
    ({"GLOG_stderrthreshold": "7"}, "GLOG_stderrthreshold='7' must be a MindSpore log level"),
    ({"GLOG_logtostderr": "yes"}, "GLOG_logtostderr='yes' must be 1 (log to the terminal) or 0"),
    ({"GLOG_logtostderr": "0"}, "GLOG_logtostderr=0 sends MindSpore's log to files, but GLOG_log_dir is not set"),
    ({"GLOG_logtostderr": "0", "GLOG_log_dir": "/proc/vit_ms_logs"}, "GLOG_log_dir='/proc/vit_ms_logs' cannot be"),
    ({"GLOG_logtostderr": "0", "GLOG_log_dir": "/tmp/my logs"}, "GLOG_log_dir='/tmp/my logs' holds characters"),
    ({"GLOG_logtostderr": "0", "GLOG_log_dir": "/tmp", "logger_maxBytes": "5MB"}, "logger_maxBytes='5MB' must be"),
    ({"logger_backupCount": "ten"}, "logger_backupCount='ten' must be a whole number"),
])
def test_what_mindspores_import_fails_on_is_found_before_it_is_imported(env, message):
    problems = mindspore_environment_problems(env)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    assert mindspore_environment_problems({"GLOG_v": "2", "GLOG_logtostderr": "1", "MS_SUBMODULE_LOG_v": "x"}) == []


def test_every_command_refuses_a_malformed_glog_v_before_mindspore_loads():
    """vit_ms/__init__.py checks first, so train.py, eval.py and every python -m vit_ms.* stop the same way."""
    for command in (["train.py", "--config", "demo"], ["-m", "vit_ms.doctor"], ["-m", "vit_ms.benchmark", "-h"]):
        proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "GLOG_v": "abc"})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip() == ("error: MindSpore cannot start with this environment: GLOG_v='abc' must be a "
                                       "MindSpore log level: 0 (DEBUG), 1 (INFO), 2 (WARNING), 3 (ERROR) or 4 "
                                       "(CRITICAL). Fix or unset each variable named, then run again")
