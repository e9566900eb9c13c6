"""vit_ms.tools.data_bench through `python -m vit_ms.benchmark --data-only --compare mindcv`: every pipeline is
timed and the derived figures follow from the measured ones (no timing thresholds)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_data_only_benchmark_against_mindcv(tmp_path):
    cmd = [sys.executable, "-m", "vit_ms.benchmark", "--config", "vit_b16.yaml", "--data-only", "--compare", "mindcv",
           "--data-images", "16", "--data-rounds", "2", "--batch", "4", "--data-image-size", "64",
           "--device-rate", "1000"]
    for item in tiny_overrides() + ["data.num_parallel_workers=2"]:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ours / mindcv: train" in proc.stdout and "cores/device" in proc.stdout
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = {(r["pipeline"], r["split"], r["format"]): r for r in records if r["measurement"] == "data_pipeline"}
    assert list(rows) == [(pipeline, split, fmt) for split in ("train", "eval")
                          for pipeline, fmt in (("ours", "folder"), ("mindcv", "folder"),
                                                ("ours", "mindrecord"))]
    for r in rows.values():
        assert r["images"] == 16 and r["file_px"] == [64, 48] and r["crop_px"] == 32 and r["batch"] == 4
        assert len(r["images_per_sec_rounds"]) == 2 and r["images_per_sec"] > 0 and r["images_per_cpu_second"] > 0
        assert r["images_per_sec_best"] == max(r["images_per_sec_rounds"]) >= r["images_per_sec"]
        assert r["images_per_sec_per_worker"] == pytest.approx(r["images_per_sec"] / r["workers"])
        assert r["cores_per_device"] == pytest.approx(1000 / r["images_per_cpu_second"])
        assert r["auto_augment"] == "rand-m9-mstd0.5-inc1" and r["mixup"] == 0.8 and r["cutmix"] == 1.0
    last = records[-1]
    assert last["measurement"] == "data_comparison"
    assert last["train_ratio"] == pytest.approx(rows[("ours", "train", "folder")]["images_per_sec"]
                                                / rows[("mindcv", "train", "folder")]["images_per_sec"])
    assert last["eval_cpu_ratio"] == pytest.approx(rows[("ours", "eval", "folder")]["images_per_cpu_second"]
                                                   / rows[("mindcv", "eval", "folder")]["images_per_cpu_second"])


def test_scan_bench_prints_the_reference_the_first_scan_and_a_later_start(tmp_path, capsys):
    from vit_ms.benchmark import main as benchmark_main

    work = tmp_path / "bench"
    assert benchmark_main(["--scan", "--scan-files", "20", "--scan-distinct", "4", "--scan-dir", str(work),
                           "--scan-keep"]) == 0
    out = capsys.readouterr().out
    assert "reference, one thread, 4 JPEGs 500x375" in out and "PIL full decode" in out
    assert "first scan: 20 files in" in out and "later start, split unchanged:" in out
    assert len(list((work / "distinct").iterdir())) == 4  # --scan-keep leaves the files for another run
    benchmark_main(["--scan", "--scan-files", "20", "--scan-distinct", "4", "--scan-dir", str(work)])
    assert not work.exists()  # removed without --scan-keep



@pytest.mark.parametrize("images, batch", [(4, 8), (11, 8), (3, 4)])
def test_fewer_images_than_two_batches_is_one_paragraph(images, batch):
    from vit_ms.config_loader import load_config
    from vit_ms.errors import UserError
    from vit_ms.tools.data_bench import data_benchmark

    with pytest.raises(UserError, match=rf"--data-images {images} makes \d+ JPEGs a split, fewer than two batches "
                                        rf"of --batch {batch}.*Use --data-images {2 * batch} or more"):
        data_benchmark(load_config(None, tiny_overrides()), batch=batch, images=images, rounds=1, compare=None,
                       device_rate=1000.0)
