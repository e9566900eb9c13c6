"""vit_ms.runtime: the chip as MindSpore reports it, and the compile, cache and memory settings handed to it."""
import inspect

import mindspore as ms
import pytest

import vit_ms.runtime as runtime
from vit_ms.config_loader import load_config
from vit_ms.errors import ConfigError
from vit_ms.runtime import (Runtime, apply_compile_settings, compile_settings, read_chip, setup_runtime,
                            use_compile_cache)


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
