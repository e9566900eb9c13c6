"""python -m vit_ms.doctor: the machine report and the tiny end-to-end run, as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vit_ms.config_loader import load_config
from vit_ms.doctor import table
from vit_ms.errors import UserError
from vit_ms.tools.selfcheck import Check, cann_version, checkpoint_gb, cuda_version

ROOT = Path(__file__).resolve().parent.parent
RUN_CHECKS = ["device", "plan", "train", "save", "resume", "eval", "export"]


def doctor(*args, cwd):
    return subprocess.run([sys.executable, "-m", "vit_ms.doctor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
def test_the_doctor_passes_on_this_cpu_with_a_table_and_one_json_line(tmp_path):
    out = doctor("--config", "demo", "--out", str(tmp_path / "doctor"), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["ok"] is True
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert all(status[name] == "ok" for name in ["mindspore", *RUN_CHECKS]), status
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert details["mindspore"].startswith("2.10") and "CPU build" in details["mindspore"]
    assert "amp O0" in details["plan"] and "attention standard" in details["plan"] and "sink off" in details["plan"]
    assert "max |weight difference|" in details["resume"] and "(as in training)" in details["eval"]
    assert lines[0].split() == ["check", "status", "seconds", "detail"]
    assert any(line.startswith("export") and " ok " in line for line in lines)
    kept = tmp_path / "doctor"  # --out keeps what the tiny run wrote
    assert (kept / "tiny_vit.mindir").is_file() and (kept / "runs" / "resumed" / "last.ckpt").is_file()
    assert (kept / "doctor.log").stat().st_size > 0  # the runs' own output went there, not into the table


def test_a_failing_check_exits_non_zero_naming_it_and_the_fix(tmp_path):
    out = doctor("--config", "demo", "--set", "amp.level=O2", "--set", "amp.dtype=bfloat16", cwd=tmp_path)
    assert out.returncode == 1
    report = json.loads(out.stdout.strip().splitlines()[-1])
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is False and status["plan"] == "fail"
    assert [status[name] for name in RUN_CHECKS[2:]] == ["skipped"] * 5
    assert "doctor: plan failed: amp.dtype=bfloat16" in out.stderr and "use amp.dtype=float16 or auto" in out.stderr


def test_a_config_that_does_not_load_is_a_user_error(tmp_path):
    out = doctor("--set", "amp.dtype=fp8", cwd=tmp_path)
    assert out.returncode == 2 and "amp.dtype" in out.stderr and "Traceback" not in out.stderr


def test_toolkit_versions_are_read_where_the_toolkits_keep_them(tmp_path, monkeypatch):
    import vit_ms.tools.selfcheck as selfcheck

    monkeypatch.setattr(selfcheck, "DEFAULT_CANN", str(tmp_path / "no_cann"))
    monkeypatch.setattr(selfcheck, "DEFAULT_CUDA", str(tmp_path / "no_cuda"))
    assert cann_version({}) == "" and cuda_version({}) == ""
    cann = tmp_path / "ascend-toolkit" / "latest"
    (cann / "x86_64-linux").mkdir(parents=True)
    (cann / "x86_64-linux" / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\n"
                                                                       "version=8.0.RC2\n")
    assert cann_version({"ASCEND_HOME_PATH": str(cann)}) == "8.0.RC2"
    cuda = tmp_path / "cuda"
    cuda.mkdir()
    (cuda / "version.json").write_text(json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}))
    assert cuda_version({"CUDA_HOME": str(cuda)}) == "12.4.1"
    (cuda / "version.json").unlink()
    (cuda / "version.txt").write_text("CUDA Version 11.0.228\n")  # before CUDA 11.1
    assert cuda_version({"CUDA_PATH": str(cuda)}) == "11.0.228"


def test_checkpoint_size_estimate_matches_the_parameter_count():
    """float32 weights plus AdamW's two moments: 3 x 4 bytes per parameter (ViT-B/16: 86.6M parameters)."""
    gb = checkpoint_gb(load_config("vit_b16"))
    assert gb == pytest.approx(86.6e6 * 12 / 2 ** 30, rel=0.02)


def test_the_table_shows_each_fix_under_its_check():
    text = table([Check("disk", "warn", "1.0 GB free", "free space"), Check("train", "skipped", "needs plan")])
    assert text.splitlines()[1].split()[:2] == ["disk", "WARN"] and "fix: free space" in text.splitlines()[2]
    assert text.splitlines()[3].split()[:2] == ["train", "-"]


def test_the_machine_checks_fail_where_train_py_refuses_in_its_words(tmp_path):
    from vit_ms.runtime import prepare_run_dir
    from vit_ms.tools.selfcheck import machine_checks

    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    for output_dir in ("/proc/vit_ms_runs", str(blocker / "runs")):
        cfg = load_config("demo", [f"output_dir={output_dir}"])
        checks = {c.name: c for c in machine_checks(cfg, {"DEVICE_ID": "abc"})}
        with pytest.raises(UserError) as refused:
            prepare_run_dir(cfg)
        assert (checks["run directory"].status, checks["run directory"].detail) == ("fail", str(refused.value))
        assert checks["launcher"].status == "fail" and checks["launcher"].detail.startswith(
            "environment variable DEVICE_ID='abc' must be a whole number")
        assert "driver" not in checks["launcher"].detail + checks["launcher"].fix
    fine = load_config("demo", [f"output_dir={tmp_path / 'out'}"])
    assert {c.name: c.status for c in machine_checks(fine, {})}["run directory"] == "ok"
    assert not (tmp_path / "out").exists()  # the probe leaves no folder behind
