"""vit_ms.tools.profile_step: one call under MindSpore's CPU profiler, summed by op type; the benchmark's --profile."""
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from vit_ms.errors import ConfigError
from vit_ms.benchmark import main as benchmark_main
from vit_ms.tools.profile_step import format_profile, profile_step


class TwoMatMuls(nn.Cell):
    def construct(self, a, b):
        return ops.softmax(ops.matmul(ops.matmul(a, b), b), axis=-1)


def test_a_profiled_call_is_summed_by_op_type(tmp_path, keep_mindspore_mode):
    ms.set_context(mode=ms.GRAPH_MODE)
    cell, a = TwoMatMuls(), ms.Tensor(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32))
    cell(a, a).asnumpy()  # compiled before profiling, as the benchmark's steps are
    rows, trace = profile_step(lambda: cell(a, a).asnumpy(), str(tmp_path / "prof"))
    by_type = {r["op_type"]: r for r in rows}
    assert by_type["MatMul"]["calls"] == 2 and by_type["Softmax"]["calls"] == 1
    assert rows == sorted(rows, key=lambda r: -r["ms"]) and all(r["ms"] > 0 for r in rows)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert (Path(trace) / "ASCEND_PROFILER_OUTPUT" / "trace_view.json").is_file()
    table = format_profile(rows, top=1)
    assert table.splitlines()[1].startswith(rows[0]["op_type"]) and f"{len(rows) - 1} other op types" in table
    assert "total op time" in table


def test_profile_is_refused_with_data_only(tmp_path):
    with pytest.raises(ConfigError, match="--profile profiles a train step"):
        benchmark_main(["--config", "demo.yaml", "--data-only", "--profile", str(tmp_path)])


def test_profile_is_refused_off_cpu(tmp_path, monkeypatch):
    from vit_ms.config_loader import load_config
    from vit_ms.runtime import Runtime
    from vit_ms.tools import model_bench as benchmark

    monkeypatch.setattr(benchmark, "setup_runtime", lambda cfg: Runtime("GPU", 0, 1))
    with pytest.raises(ConfigError, match="--profile sums CPU op times; this run targets GPU"):
        benchmark.benchmark(load_config("demo"), 1, 0, None, False, 0, 1, profile_dir=str(tmp_path))
