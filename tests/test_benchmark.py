"""The benchmark tool end to end: a tiny model against mindcv's, every record it promises (no timing thresholds).
The FLOP count, formulations, fused AdamW and O0 loss check it measures are tested in their own modules' files."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_overrides(num_classes=5) + ["data.mixup=0.8", "data.cutmix=1.0", "data.num_parallel_workers=2"]


def test_benchmark_smoke_with_mindcv_comparison(tmp_path):
    cmd = [sys.executable, "-m", "vit_ms.benchmark", "--config", "demo.yaml", "--batch", "2", "--steps", "2",
           "--warmup", "1", "--mode", "graph", "--compare", "mindcv", "--data-batches", "3",
           "--profile", str(tmp_path / "prof"), "--formulation", "bias_grad=gemm"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert "train images/s (median)" in proc.stdout and "ours / mindcv" in proc.stdout  # the table comes first
    records = [json.loads(line) for line in lines if line.startswith("{")]
    by_kind = {}
    for r in records[:-1]:
        by_kind.setdefault(r["measurement"], []).append(r)
    assert set(by_kind) == {"setting", "flops", "matmul_peak", "train", "compile", "eval", "memory", "utilisation",
                            "data", "profile"}
    setting = by_kind["setting"][0]
    assert setting["formulation"]["norms"] == "float32" and setting["formulation"]["backward"] == "handwritten"
    assert setting["formulation"]["bias_grad"] == "gemm"  # --formulation: CPU's own choice is reduce
    assert f"formulation (ours): {setting['formulation_text']}" in proc.stdout and "norms float32" in proc.stdout
    profile = by_kind["profile"][0]  # one train step of ours: the dense layers' MatMul is there
    assert profile["model"] == "ours" and "MatMul" in {r["op_type"] for r in profile["op_types"]}
    assert profile["trace"].startswith(str(tmp_path / "prof")) and "total op time" in proc.stdout
    for kind in ("train", "compile", "eval", "memory", "utilisation"):
        assert [r["model"] for r in by_kind[kind]] == ["ours", "mindcv"]
    for r in by_kind["train"] + by_kind["eval"]:
        assert r["images_per_sec"] > 0 and r["images_per_sec_min"] <= r["images_per_sec"] <= r["images_per_sec_max"]
        assert r["steps"] == 2 and r["batch"] == 2
    for r in by_kind["train"]:
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
    assert all(r["first_step_s"] > 0 for r in by_kind["compile"])
    assert all(r["peak_bytes"] > 0 and "RSS" in r["source"] for r in by_kind["memory"])
    # measured in a spawned process per model (a tiny model adds nothing above the imports' peak, so >= 0)
    assert all(isinstance(r["growth_bytes"], int) and 0 <= r["growth_bytes"] < r["peak_bytes"]
               and "fresh process" in r["growth_source"] for r in by_kind["memory"])
    assert "first train step's memory growth, GB" in proc.stdout
    assert all(r["train_gflops_per_sec"] > 0 and 0 < r["mfu"] < 1 for r in by_kind["utilisation"])
    peak = by_kind["matmul_peak"][0]
    assert peak["numpy_gflops"] > 0 and peak["mindspore_gflops"] > 0
    data = by_kind["data"][0]
    assert data["images_per_sec"] > 0 and data["images"] == 6 and data["workers"] >= 1
    flops = by_kind["flops"][0]
    assert flops["train_gflops_per_image"] == pytest.approx(3 * flops["forward_gflops_per_image"])
    last = records[-1]
    assert {"ours_images_per_sec", "mindcv_images_per_sec", "ratio"} <= set(last)
    assert last["ours_images_per_sec"] > 0 and last["mindcv_images_per_sec"] > 0
    assert last["ratio"] == pytest.approx(last["ours_images_per_sec"] / last["mindcv_images_per_sec"])
    assert lines[-1].startswith("{") and json.loads(lines[-1]) == last


@pytest.mark.parametrize("argv, message", [
    ([], "--config is required"),
    (["--scan", "--config", "demo.yaml"], "it cannot go with --config"),
    (["--scan", "--data-only", "--compare", "mindcv"], "it cannot go with --data-only, --compare"),
    (["--scan", "--scan-files", "0"], "--scan-files and --scan-distinct must be >= 1"),
])
def test_usage_errors_name_the_flags(argv, message):
    from vit_ms.benchmark import main
    from vit_ms.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        main(argv)
