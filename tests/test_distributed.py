"""Data-parallel training: the launch scripts, the cross-rank checks, and two real msrun workers on this CPU.

`test_two_msrun_workers_train_resume_and_match_single_process_eval` is the slow one (marked `slow`, about a
minute on two cores; it is part of the default `python -m pytest -q tests`): it launches
scripts/run_distribute_train.sh with 2 workers twice (train, then resume) and checks the run against a
single-process eval.py. Everything else here runs in seconds: the Ascend rank-table script is checked through
DRY_RUN=1 and with a stand-in `python` on PATH (no Ascend here), the cross-rank checks with a fake all-gather.
"""
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_overrides

from vit_ms.train.checkpoint import TrainState
from vit_ms.data.demo import write_synthetic_folder
from vit_ms.train.distributed import (check_replicas, check_same_resume, digest_words, resume_disagreement,
                                weights_digest)
from vit_ms.errors import CheckpointError
from vit_ms.runtime import launched_distributed

ROOT = Path(__file__).resolve().parent.parent
MSRUN_SCRIPT = ROOT / "scripts" / "run_distribute_train.sh"
RANKTABLE_SCRIPT = ROOT / "scripts" / "run_distribute_train_ascend_ranktable.sh"
TINY = [*tiny_overrides(depth=1, num_classes=3), "train.batch_size=4", "data.num_parallel_workers=1",
        "train.log_interval=1", "data.scale=[0.9, 1.0]"]  # a value with a space: forwarded as one argument
LAUNCH_VARS = ("MS_ROLE", "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT", "RANK_TABLE_FILE", "RANK_SIZE",
               "RANK_ID", "DEVICE_ID", "NUM_NODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "LOG_DIR",
               "SERVER_ID", "BIND_CORES", "BIND_NUMA", "HCCL_CONNECT_TIMEOUT", "HCCL_EXEC_TIMEOUT", "DRY_RUN")


def script_env(**extra) -> dict:
    """This interpreter's bin folder first on PATH (the scripts run `python` and `msrun` from PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def bash(script, *args, cwd=ROOT, timeout=120, **env):
    return subprocess.run(["bash", str(script), *map(str, args)], cwd=cwd, env=script_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sets(*items):
    return [arg for item in items for arg in ("--set", item)]


# ----------------------------------------------------------------------------------------------------------
# scripts/run_distribute_train.sh (msrun)


def test_msrun_script_builds_the_multi_node_command():
    out = bash(MSRUN_SCRIPT, 8, "configs/vit_b16.yaml", *sets("data.root=/data/my imagenet"), "--resume", "auto",
               DRY_RUN=1, NUM_NODES=2, NODE_RANK=1, MASTER_ADDR="10.1.2.3", MASTER_PORT=29500, LOG_DIR="/logs/x")
    assert out.returncode == 0, out.stderr
    assert shlex.split(out.stdout) == [
        "HCCL_CONNECT_TIMEOUT=1800", "HCCL_EXEC_TIMEOUT=3672", "msrun", "--worker_num=16", "--local_worker_num=8", "--master_addr=10.1.2.3", "--master_port=29500",
        "--node_rank=1", "--log_dir=/logs/x", "--join=True", "--cluster_time_out=600", str(ROOT / "train.py"),
        "--config", "configs/vit_b16.yaml", "--set", "data.root=/data/my imagenet", "--resume", "auto"]


def test_msrun_script_defaults_to_one_local_node():
    out = bash(MSRUN_SCRIPT, 2, "demo", DRY_RUN=1)
    assert shlex.split(out.stdout)[2:11] == [
        "msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1", "--master_port=8118",
        "--node_rank=0", "--log_dir=msrun_log", "--join=True", "--cluster_time_out=600"]


@pytest.mark.parametrize("args, env, message", [
    ([], {}, "expected <workers_per_node> and <config.yaml>, got 0 argument(s)"),
    (["8"], {}, "got 1 argument(s)"),
    (["eight", "demo.yaml"], {}, "<workers_per_node> (first argument) must be an integer >= 1, got 'eight'"),
    (["0", "demo.yaml"], {}, "must be an integer >= 1, got 0"),
    (["2", "vit_b61.yaml"], {}, "config file 'vit_b61.yaml' not found"),
    (["2", "demo.yaml"], {"NUM_NODES": 2, "NODE_RANK": 2}, "NODE_RANK must be an integer in 0..1, got 2"),
    (["2", "demo.yaml"], {"MASTER_PORT": 80}, "MASTER_PORT must be an integer in 1024..65535, got 80"),
    (["2", "demo.yaml"], {"NUM_NODES": "two"}, "NUM_NODES must be an integer >= 1, got 'two'"),
])
def test_msrun_script_rejects_bad_arguments(args, env, message):
    out = bash(MSRUN_SCRIPT, *args, DRY_RUN=1, **env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stdout == ""


@pytest.mark.parametrize("env, message", [
    ({"HCCL_CONNECT_TIMEOUT": 60}, "HCCL_CONNECT_TIMEOUT must be an integer in 120..7200, got 60"),
    ({"HCCL_EXEC_TIMEOUT": "1h"}, "HCCL_EXEC_TIMEOUT must be an integer in 1..17340, got '1h'"),
    ({"BIND_NUMA": "yes"}, "BIND_NUMA must be 0 or 1 or an existing msrun NUMA binding file (JSON), got 'yes'"),
])
def test_launch_settings_out_of_range_are_refused_by_both_scripts(env, message, tmp_path):
    table = rank_table(tmp_path / "hccl.json", [("10.0.0.1", [(0, 0)])])
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml", DRY_RUN=1, **env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    out = bash(RANKTABLE_SCRIPT, table, "demo.yaml", DRY_RUN=1, **env)
    assert out.returncode == 2 and message.split(" or an existing")[0] in out.stderr, out.stderr


def test_msrun_script_exports_overridable_hccl_timeouts_and_offers_numa_binding(tmp_path):
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml", DRY_RUN=1, HCCL_CONNECT_TIMEOUT=7200, HCCL_EXEC_TIMEOUT="0900",
               BIND_NUMA=1)
    assert out.returncode == 0, out.stderr
    words = shlex.split(out.stdout)
    assert words[:3] == ["HCCL_CONNECT_TIMEOUT=7200", "HCCL_EXEC_TIMEOUT=900", "msrun"]
    assert "--bind_numa=True" in words and words.index("--bind_numa=True") < words.index(str(ROOT / "train.py"))
    binding = tmp_path / "numa.json"
    binding.write_text('{"bind_config": {"bind_cpu_mode": "numa"}}')
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml", DRY_RUN=1, BIND_NUMA=binding)
    assert f"--bind_numa={binding}" in shlex.split(out.stdout)
    assert not any(w.startswith("--bind_numa") for w in shlex.split(bash(MSRUN_SCRIPT, 2, "demo", DRY_RUN=1).stdout))


@pytest.mark.skipif(shutil.which("numactl") is not None, reason="numactl is installed here")
def test_numa_binding_without_numactl_says_how_to_fix_it(tmp_path):
    table = rank_table(tmp_path / "hccl.json", [("10.0.0.1", [(0, 0)])])
    for args in ((MSRUN_SCRIPT, 2, "demo.yaml"), (RANKTABLE_SCRIPT, table, "demo.yaml")):
        out = bash(*args, BIND_NUMA=1)
        assert out.returncode == 2 and "'numactl' is not on PATH" in out.stderr and "BIND_NUMA=0" in out.stderr


def test_ranktable_numa_binding_deals_the_nodes_out_to_the_devices(tmp_path):
    rt = load_rank_table_module()
    assert rt.split_numa([0, 1], 8) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert rt.split_numa([0, 1, 2, 3], 2) == [0, 2] and rt.split_numa([], 2) == [None, None]
    nodes = tmp_path / "node"
    for name in ("node1", "node0", "possible", "has_cpu"):
        (nodes / name).mkdir(parents=True)
    assert rt.numa_nodes(str(nodes)) == [0, 1] and rt.numa_nodes(str(tmp_path / "none")) == []
    table = rank_table(tmp_path / "hccl.json", [("10.0.0.1", [(0, 0), (1, 1)])])
    out = bash(RANKTABLE_SCRIPT, table, "demo.yaml", DRY_RUN=1, BIND_NUMA=1)
    assert out.returncode == 0, out.stderr
    host_nodes = rt.split_numa(rt.numa_nodes(), 2)
    for line, node in zip(out.stdout.splitlines(), host_nodes):
        words = shlex.split(line)
        assert "taskset" not in words
        if node is not None:
            assert words[7:10] == ["numactl", f"--cpunodebind={node}", f"--membind={node}"]


def test_msrun_script_help_names_the_python_it_uses():
    out = bash(MSRUN_SCRIPT, "--help")
    assert out.returncode == 0 and "'python' from PATH" in out.stdout and "MASTER_PORT" in out.stdout


def test_msrun_script_fails_when_the_workers_fail(tmp_path):
    """A config error stops every process before the cluster forms; the script exits non-zero and says where
    the logs are."""
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml", *sets("train.epochs=0"), cwd=tmp_path, timeout=120,
               MASTER_PORT=free_port(), LOG_DIR=tmp_path / "logs")
    assert out.returncode != 0
    assert "distributed training failed" in out.stderr and str(tmp_path / "logs") in out.stderr
    assert "train.epochs=0" in (tmp_path / "logs" / "worker_0.log").read_text()
    assert re.search(r"error: rank [01] \(worker [01] of node 0, pid \d+, .*\) exited with status 2", out.stderr)


def test_launch_report_names_the_rank_of_the_failed_pid(tmp_path):
    (tmp_path / "msrun.err").write_text("[ERROR] ... Worker process 4242 exit with exception. Error code: -9.\n")
    (tmp_path / "worker_0.log").write_text("[WARNING] DISTRIBUTED(4241,7f,python): ...\n")
    (tmp_path / "worker_1.log").write_text("[WARNING] DISTRIBUTED(4242,7f,python): ...\n")
    report = load_script_module("launch_report").report
    line = report(tmp_path, node_rank=1, workers=2)
    assert line.startswith("rank 3 (worker 1 of node 1, pid 4242") and "killed by SIGKILL (signal 9" in line
    assert "--resume auto" in line
    (tmp_path / "msrun.err").write_text("nothing failed\n")
    assert report(tmp_path, 0, 2) is None


# ----------------------------------------------------------------------------------------------------------
# scripts/run_distribute_train_ascend_ranktable.sh, checked without Ascend


def rank_table(path: Path, servers) -> Path:
    """A version 1.0 rank table: servers = [(server_id, [(device_id, rank_id), ...]), ...]."""
    table = {"version": "1.0", "server_count": str(len(servers)), "status": "completed", "server_list": [
        {"server_id": sid, "host_nic_ip": "reserve",
         "device": [{"device_id": str(d), "device_ip": f"192.168.{d}.{i + 1}", "rank_id": str(r)} for d, r in devs]}
        for i, (sid, devs) in enumerate(servers)]}
    path.write_text(json.dumps(table))
    return path


TWO_NODES = [("10.0.0.1", [(0, 0), (1, 1)]), ("10.0.0.2", [(0, 2), (1, 3)])]


def load_script_module(name: str):
    """scripts/<name>.py, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_rank_table_module():
    return load_script_module("rank_table")


def test_rank_table_core_shares():
    rt = load_rank_table_module()
    assert rt.split_cpus(list(range(192)), 8)[:2] == ["0-23", "24-47"] and rt.split_cpus(range(192), 8)[7] == "168-191"
    assert rt.split_cpus([16, 17, 18, 19, 20, 21], 2) == ["16-18", "19-21"]  # a cpuset that does not start at 0
    assert rt.split_cpus([0, 2, 4, 6], 2) == ["0,2", "4,6"]
    assert rt.split_cpus([0, 1], 8) == [None] * 8  # fewer cores than devices: no binding
    assert rt.split_cpus(list(range(10)), 4) == ["0-1", "2-3", "4-5", "6-7"]  # the remainder stays unbound


def test_ranktable_dry_run_prints_each_ranks_command(tmp_path):
    table = rank_table(tmp_path / "hccl.json", TWO_NODES)
    out = bash(RANKTABLE_SCRIPT, table, "demo.yaml", *sets("data.root=/data/my imagenet"), "--resume", "auto",
               DRY_RUN=1, SERVER_ID="10.0.0.2", LOG_DIR="rt logs")
    assert out.returncode == 0, out.stderr
    cpus = load_rank_table_module().split_cpus(sorted(os.sched_getaffinity(0)), 2)
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line, (device, rank), share in zip(lines, [(0, 2), (1, 3)], cpus):
        words = shlex.split(line)
        binding = ["taskset", "-c", share] if share else []
        assert words == ["env", f"RANK_TABLE_FILE={table}", "RANK_SIZE=4", f"RANK_ID={rank}", f"DEVICE_ID={device}",
                         "HCCL_CONNECT_TIMEOUT=1800", "HCCL_EXEC_TIMEOUT=3672", *binding, "python", str(ROOT / "train.py"), "--config", "demo.yaml",
                         "--set", "data.root=/data/my imagenet", "--resume", "auto",
                         ">", f"rt logs/rank_{rank}/worker.log", "2>&1", "&"]


def test_ranktable_finds_this_node_by_address_and_can_skip_binding(tmp_path):
    table = rank_table(tmp_path / "hccl.json", [("10.9.9.9", [(0, 0)]), ("127.0.0.1", [(0, 1), (3, 2)])])
    out = bash(RANKTABLE_SCRIPT, table, "demo.yaml", DRY_RUN=1, BIND_CORES=0)
    assert out.returncode == 0, out.stderr
    assert [shlex.split(line)[1:5] for line in out.stdout.splitlines()] == [
        [f"RANK_TABLE_FILE={table}", "RANK_SIZE=3", "RANK_ID=1", "DEVICE_ID=0"],
        [f"RANK_TABLE_FILE={table}", "RANK_SIZE=3", "RANK_ID=2", "DEVICE_ID=3"]]
    assert "taskset" not in out.stdout


def test_ranktable_errors_say_what_to_do(tmp_path):
    table = rank_table(tmp_path / "hccl.json", TWO_NODES)
    (tmp_path / "broken.json").write_text("{not json")
    cases = [((table, "demo.yaml"), {}, "set SERVER_ID to this node's server_id"),
             ((table, "demo.yaml"), {"SERVER_ID": "10.0.0.7"}, "SERVER_ID=10.0.0.7 is not in it; its server_ids "
                                                               "are 10.0.0.1, 10.0.0.2"),
             ((tmp_path / "broken.json", "demo.yaml"), {}, "broken.json'"),
             ((tmp_path / "missing.json", "demo.yaml"), {}, "rank table"),
             ((table, "nope.yaml"), {}, "config file 'nope.yaml' not found"),
             ((table,), {}, "expected <rank_table.json> and <config.yaml>, got 1 argument(s)"),
             ((table, "demo.yaml"), {"BIND_CORES": "yes", "SERVER_ID": "10.0.0.1"}, "BIND_CORES must be 0 or 1")]
    for args, env, message in cases:
        out = bash(RANKTABLE_SCRIPT, *args, DRY_RUN=1, **env)
        assert out.returncode == 2 and message in out.stderr, (args, env, out.stderr)


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python: runs the rank-table helper for real, records what a training process would get.
case "$1" in *rank_table.py) exec {python} "$@";; esac
printf '%s\\n' "$@" > "$FAKE_OUT/rank_$RANK_ID.args"
echo "RANK_TABLE_FILE=$RANK_TABLE_FILE RANK_SIZE=$RANK_SIZE RANK_ID=$RANK_ID DEVICE_ID=$DEVICE_ID" > "$FAKE_OUT/rank_$RANK_ID.env"
echo "HCCL_CONNECT_TIMEOUT=$HCCL_CONNECT_TIMEOUT HCCL_EXEC_TIMEOUT=$HCCL_EXEC_TIMEOUT" > "$FAKE_OUT/rank_$RANK_ID.hccl"
{python} -c 'import os; print(sorted(os.sched_getaffinity(0)))' > "$FAKE_OUT/rank_$RANK_ID.cpus"
echo "rank $RANK_ID says hello"
if [ "$RANK_ID" = "$FAIL_RANK" ]; then exit 3; fi
sleep "$SLEEP" & child=$!
trap 'kill $child; exit 143' TERM
wait $child
touch "$FAKE_OUT/rank_$RANK_ID.done"
"""


@pytest.fixture
def fake_python(tmp_path):
    bin_dir, out = tmp_path / "bin", tmp_path / "out"
    bin_dir.mkdir()
    out.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON.format(python=sys.executable))
    (bin_dir / "python").chmod(0o755)
    return bin_dir, out


def run_fake_ranks(tmp_path, fake_python, **env):
    bin_dir, out = fake_python
    table = rank_table(tmp_path / "hccl.json", TWO_NODES)
    full_env = script_env(SERVER_ID="10.0.0.1", LOG_DIR=tmp_path / "logs", FAKE_OUT=out, **env)
    full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env['PATH']}"
    start = time.time()
    proc = subprocess.run(["bash", str(RANKTABLE_SCRIPT), str(table), "demo.yaml", "--set", "a b=c"], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=60)
    return proc, out, table, time.time() - start


def test_ranktable_starts_every_rank_and_waits_for_all(tmp_path, fake_python):
    proc, out, table, _ = run_fake_ranks(tmp_path, fake_python, FAIL_RANK="none", SLEEP=1)
    assert proc.returncode == 0, proc.stderr
    cpus = load_rank_table_module().split_cpus(sorted(os.sched_getaffinity(0)), 2)
    for rank in (0, 1):
        assert (out / f"rank_{rank}.done").exists()
        assert (out / f"rank_{rank}.env").read_text().split() == [
            f"RANK_TABLE_FILE={table}", "RANK_SIZE=4", f"RANK_ID={rank}", f"DEVICE_ID={rank}"]
        assert (out / f"rank_{rank}.args").read_text().splitlines() == [
            str(ROOT / "train.py"), "--config", "demo.yaml", "--set", "a b=c"]
        if cpus[rank]:
            first, _, last = cpus[rank].partition("-")
            assert json.loads((out / f"rank_{rank}.cpus").read_text()) == list(range(int(first), int(last or first) + 1))
        assert (tmp_path / "logs" / f"rank_{rank}" / "worker.log").read_text() == f"rank {rank} says hello\n"


def test_ranktable_processes_get_the_hccl_timeouts_as_overridden(tmp_path, fake_python):
    proc, out, _, _ = run_fake_ranks(tmp_path, fake_python, FAIL_RANK="none", SLEEP=0, HCCL_CONNECT_TIMEOUT=600)
    assert proc.returncode == 0, proc.stderr
    for rank in (0, 1):
        assert (out / f"rank_{rank}.hccl").read_text().split() == ["HCCL_CONNECT_TIMEOUT=600", "HCCL_EXEC_TIMEOUT=3672"]


def test_ranktable_stops_the_other_ranks_when_one_fails(tmp_path, fake_python):
    proc, out, _, seconds = run_fake_ranks(tmp_path, fake_python, FAIL_RANK=1, SLEEP=30)
    assert proc.returncode == 3
    assert "rank 1 exited with status 3" in proc.stderr and "rank_1/worker.log" in proc.stderr
    assert seconds < 20 and not (out / "rank_0.done").exists()  # rank 0 was stopped, not waited for


# ----------------------------------------------------------------------------------------------------------
# Launch detection and the cross-rank checks (a fake all-gather stands in for the other ranks)


def test_launch_detection():
    assert launched_distributed({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2"})
    # msrun with one worker still starts its scheduler process, which must call init() to become one
    assert launched_distributed({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "1"})
    assert launched_distributed({"RANK_TABLE_FILE": "/x.json", "RANK_SIZE": "8"})
    assert not launched_distributed({"RANK_TABLE_FILE": "/x.json", "RANK_SIZE": "1"})
    assert not launched_distributed({})


def test_weights_digest_ignores_optimizer_state_and_sees_every_bit():
    w = {"head.weight": np.ones((2, 3), np.float32), "head.bias": np.zeros(2, np.float32)}
    digest = weights_digest(w)
    assert digest == weights_digest({**w, "adam_m.head.weight": np.full((2, 3), 7.0, np.float32),
                                     "vit_ms_epoch": np.array(3)})
    flipped = w["head.weight"].copy()
    flipped.view(np.int32)[0, 0] ^= 1  # one bit of one weight
    assert weights_digest({**w, "head.weight": flipped}) != digest
    assert weights_digest({"head.weight": w["head.weight"].reshape(3, 2), "head.bias": w["head.bias"]}) != digest


def gather_from(*other_rows):
    """A fake all-gather: this rank's row first, then the given rows of the other ranks."""
    return lambda row, world_size: np.array([list(row), *[list(r) for r in other_rows]], np.int32)


def test_ranks_that_resume_from_different_checkpoints_stop_with_the_fix(tmp_path):
    params = {"head.weight": np.ones(3, np.float32)}
    state = TrainState(epoch=4, step_in_epoch=0, global_step=40)
    same = [1, 4, 0, 40, *digest_words(weights_digest(params))]
    check_same_resume(tmp_path / "last.ckpt", params, state, 0, 3, tmp_path, gather=gather_from(same, same))
    fresh = [0] * len(same)
    check_same_resume(None, None, TrainState(), 0, 2, tmp_path, gather=gather_from(fresh))

    stale = [1, 2, 0, 20, *digest_words(weights_digest({"head.weight": np.zeros(3, np.float32)}))]
    with pytest.raises(CheckpointError) as err:
        check_same_resume(tmp_path / "last.ckpt", params, state, 0, 4, tmp_path / "r",
                          gather=gather_from(same, fresh, stale))
    message = str(err.value)
    assert "the 4 ranks would resume from different checkpoints: ranks 0-1: epoch 4 step 0 (global step 40)" in message
    assert "rank 2: no checkpoint (a fresh start); rank 3: epoch 2 step 0 (global step 20)" in message
    assert f"put output_dir on storage all nodes share, or copy rank 0's '{tmp_path / 'r' / 'last.ckpt'}'" in message
    assert resume_disagreement(np.array([same, same])) is None


class _Model:
    def __init__(self, value):
        self.value = value

    def get_parameters(self):
        import mindspore as ms

        return [ms.Parameter(ms.Tensor(np.full(3, self.value, np.float32)), name="head.weight")]


def test_replica_check_logs_the_digest_or_warns():
    digest = weights_digest({"head.weight": np.full(3, 1.0, np.float32)})
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("vit_ms")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        assert check_replicas(_Model(1.0), 2, gather=gather_from(digest_words(digest)))
        assert not check_replicas(_Model(1.0), 3, gather=gather_from(digest_words(digest), [0, 0, 0, 0]))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    text = "\n".join(r.getMessage() for r in records)
    assert f"model weights identical on all 2 ranks (sha256 {digest})" in text
    assert "model weights differ between ranks: those of rank 2 are not rank 0's" in text


# ----------------------------------------------------------------------------------------------------------
# Two real workers


def launch(tmp_path, data, epochs, port):
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml",
               *sets(f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "run_name=dp", f"train.epochs={epochs}",
                     *TINY),
               "--resume", "auto", "--allow-changes", cwd=tmp_path, timeout=300, MASTER_PORT=port,
               LOG_DIR=tmp_path / "msrun_log")  # a second launch raises train.epochs: the cosine is rebuilt
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    return out


def final_digest(log_text: str) -> str:
    lines = [line for line in log_text.splitlines() if "model weights identical on all 2 ranks" in line]
    assert lines, log_text[-3000:]
    return lines[-1].rsplit("sha256 ", 1)[1].rstrip(")")


@pytest.mark.slow
def test_two_msrun_workers_train_resume_and_match_single_process_eval(tmp_path):
    import mindspore as ms

    data = write_synthetic_folder(tmp_path / "data", num_classes=3, train_per_class=8, val_per_class=5,
                                  image_size=32, seed=0)  # 15 val images: 8 on rank 0, 7 on rank 1, no padding
    run_dir, logs = tmp_path / "runs" / "dp", tmp_path / "msrun_log"

    launch(tmp_path, data, epochs=1, port=free_port())
    rank0, rank1 = (run_dir / "train.log").read_text(), (run_dir / "train_rank1.log").read_text()
    assert "data-parallel rank 0 of 2" in rank0 and "data-parallel rank 1 of 2" in rank1
    for text in (rank0, rank1):  # every rank trained the 24 images as 3 steps of a global batch of 8
        assert "epoch 1 step 3/3" in text and "epoch 1 done" in text and "global batch 8" in text
        assert "resume auto: no checkpoint" in text
    assert sorted(p.name for p in logs.iterdir()) == ["msrun.err", "scheduler.log", "worker_0.log",
                                                     "worker_1.log"]
    first = final_digest(rank1)
    assert final_digest(rank0) == first == weights_digest(ms.load_checkpoint(str(run_dir / "last.ckpt")))

    launch(tmp_path, data, epochs=2, port=free_port())  # --resume auto on both ranks: the same last.ckpt
    rank0, rank1 = (run_dir / "train.log").read_text(), (run_dir / "train_rank1.log").read_text()
    for text in (rank0, rank1):
        assert f"resumed from {run_dir / 'last.ckpt'} at epoch 2 step 0 (global step 3)" in text
    digest = final_digest(rank1)
    assert digest != first and final_digest(rank0) == digest
    assert weights_digest(ms.load_checkpoint(str(run_dir / "last.ckpt"))) == digest

    # One writer: a single set of checkpoints and one metrics line per epoch.
    ckpts = sorted(str(p.relative_to(tmp_path / "runs")) for p in (tmp_path / "runs").rglob("*.ckpt"))
    assert ckpts == ["dp/best.ckpt", "dp/epoch_0001.ckpt", "dp/epoch_0002.ckpt", "dp/last.ckpt"]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"], r["val_images"]) for r in records] == [(1, 3, 15), (2, 6, 15)]

    # The validation split over 2 ranks and summed equals one process scoring the whole split.
    proc = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--config", str(run_dir / "config.yaml"),
                           "--ckpt", str(run_dir / "last.ckpt")], cwd=tmp_path, env=script_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads(proc.stdout.strip().splitlines()[-1])
    assert single["num_images"] == 15
    assert records[-1]["val_top1"] == single["top1"] and records[-1]["val_top5"] == single["top5"]
    assert records[-1]["val_loss"] == pytest.approx(single["loss"], rel=1e-6)  # float32 all-reduce of the sums


@pytest.mark.slow
def test_two_msrun_workers_eval_gives_the_single_process_confusion_matrix(tmp_path):
    import mindspore as ms

    from vit_ms.config import config_to_dict
    from vit_ms.config_loader import load_config
    from vit_ms.models import VisionTransformer, resolve_architecture
    from vit_ms.train.checkpoint import save_checkpoint
    from vit_ms.weights.checkpoint import CheckpointMeta

    data = write_synthetic_folder(tmp_path / "data", num_classes=3, train_per_class=2, val_per_class=5,
                                  image_size=32, seed=1)  # 15 val images: 8 on rank 0, 7 on rank 1
    cfg = load_config(None, [*TINY, f"data.root={data}", "data.interpolation=bilinear"])
    ms.set_seed(3)
    model = VisionTransformer(resolve_architecture(cfg.model))
    for p in model.get_parameters():  # a head that spreads the predictions over the classes
        if p.name == "head.weight":
            p.set_data(ms.Tensor(np.random.default_rng(3).normal(0, 1.0, p.shape).astype(np.float32)))
    ckpt = tmp_path / "w.ckpt"
    save_checkpoint(model, ckpt, TrainState(), CheckpointMeta(config_to_dict(cfg), None,
                                                              ["class_0", "class_1", "class_2"]))
    single = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--ckpt", str(ckpt), "--out",
                             str(tmp_path / "single")], cwd=tmp_path, env=script_env(), capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    cmd = ["msrun", "--worker_num=2", "--local_worker_num=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", f"--log_dir={tmp_path / 'msrun_log'}", "--join=True",
           str(ROOT / "eval.py"), "--ckpt", str(ckpt), "--out", str(tmp_path / "dp")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=script_env(), capture_output=True, text=True, timeout=300)
    logs = "\n".join(p.read_text() for p in sorted((tmp_path / "msrun_log").glob("worker_*.log")))
    assert proc.returncode == 0, logs[-4000:]
    worker0 = (tmp_path / "msrun_log" / "worker_0.log").read_text()  # also holds MindSpore's own log lines
    ranked = json.loads([line for line in worker0.splitlines() if line.startswith('{"top1"')][-1])
    alone = json.loads(single.stdout.strip().splitlines()[-1])
    assert {k: v for k, v in ranked.items() if k not in ("images_per_sec", "loss")} == \
        {k: v for k, v in alone.items() if k not in ("images_per_sec", "loss")}
    assert ranked["loss"] == pytest.approx(alone["loss"], rel=1e-6)  # float32 all-reduce of the sums
    assert (tmp_path / "dp" / "per_class.csv").read_text() == (tmp_path / "single" / "per_class.csv").read_text()
    rows = (tmp_path / "single" / "per_class.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == [5, 5, 5]
    assert sorted(p.name for p in (tmp_path / "dp").iterdir()) == ["confusion.png", "per_class.csv"]


@pytest.mark.slow
def test_sigterm_to_rank_0_stops_both_workers_after_the_same_step(tmp_path):
    from vit_ms.train.checkpoint import train_state
    from vit_ms.weights.checkpoint import read_checkpoint

    data = write_synthetic_folder(tmp_path / "data", num_classes=3, train_per_class=8, val_per_class=2,
                                  image_size=32, seed=0)
    run_dir = tmp_path / "runs" / "dp"
    cmd = ["bash", str(MSRUN_SCRIPT), "2", "demo.yaml",
           *sets(f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "run_name=dp", "train.epochs=1000", *TINY)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=script_env(MASTER_PORT=free_port(), LOG_DIR=tmp_path / "logs"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        log = run_dir / "train.log"
        while time.time() < deadline and proc.poll() is None and not (log.is_file() and "epoch 2 step 1/" in
                                                                         log.read_text()):
            time.sleep(0.05)
        rank0_pid = json.loads((run_dir / ".lock").read_text())["pid"]  # only rank 0 holds the lock
        os.kill(rank0_pid, 15)  # rank 1 gets no signal: it learns of the stop from the all-gather
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    steps = []
    for name in ("train.log", "train_rank1.log"):
        lines = [line for line in (run_dir / name).read_text().splitlines() if "training stopped by SIGTERM" in line]
        assert len(lines) == 1, name
        steps.append(int(lines[0].split("after global step ")[1].split()[0]))
    assert steps[0] == steps[1] == train_state(read_checkpoint(run_dir / "last.ckpt")).global_step
    assert "rank 0 saved last.ckpt" in (run_dir / "train_rank1.log").read_text()


@pytest.mark.slow
def test_two_workers_accumulating_match_one_process_with_the_whole_batch(tmp_path):
    """2 msrun workers x 2 micro-batches of 2 (one all-reduce per optimizer step) give the update of one process
    training the same 8 images as one batch: fixed transforms, no dropout or mixup, SGD, one step."""
    import mindspore as ms

    data = write_synthetic_folder(tmp_path / "data", num_classes=3, train_per_class=8, val_per_class=2,
                                  image_size=32, seed=0)
    common = [f"data.root={data}", f"output_dir={tmp_path / 'runs'}", *tiny_overrides(depth=1, num_classes=3),
              "data.num_parallel_workers=1", "data.scale=[1.0, 1.0]", "data.ratio=[1.0, 1.0]", "train.epochs=1",
              "train.steps_per_epoch=1", "train.deterministic=true", "optim.name=sgd", "optim.momentum=0.9"]
    out = bash(MSRUN_SCRIPT, 2, "demo.yaml", *sets(*common, "run_name=dp", "train.batch_size=2",
                                                   "train.accum_steps=2"),
               cwd=tmp_path, timeout=300, MASTER_PORT=free_port(), LOG_DIR=tmp_path / "msrun_log")
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-3000:]}"
    rank0 = (tmp_path / "runs" / "dp" / "train.log").read_text()
    assert "batch 2 per device x 2 accumulated, 8 global" in rank0 and "epoch 1 step 1/1" in rank0
    single = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "demo.yaml",
                             *sets(*common, "run_name=one", "train.batch_size=8")], cwd=tmp_path, env=script_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    dp, one = (ms.load_checkpoint(str(tmp_path / "runs" / name / "last.ckpt")) for name in ("dp", "one"))
    names = [k for k in one if k.startswith(("blocks.", "head.", "patch_embed.", "norm.", "cls_token", "pos_embed"))]
    assert len(names) > 10 and np.abs(one["accum.head.weight"].asnumpy()).max() > 1e-4  # a step was taken
    for k in names + ["accum.head.weight"]:  # weights, and the momentum buffer (= the step's gradient)
        np.testing.assert_allclose(dp[k].asnumpy(), one[k].asnumpy(), rtol=0, atol=1e-5, err_msg=k)


def digest_of(run_dir: Path) -> str:
    return final_digest((run_dir / "train.log").read_text())


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_named_and_resume_or_two_nodes_give_the_same_weights(tmp_path):
    """One node with 2 workers (the reference); the same as two nodes of one worker each (two launches,
    NODE_RANK 0 and 1, master 127.0.0.1); and kill -9 of rank 1 in epoch 2: the job stops within a bound, the
    launch script names rank 1, last.ckpt is the complete epoch-1 one, and --resume auto ends at the reference's
    weights. Deterministic mode: every run draws the same crops."""
    from vit_ms.train.checkpoint import train_state
    from vit_ms.weights.checkpoint import read_checkpoint

    data = write_synthetic_folder(tmp_path / "data", num_classes=3, train_per_class=8, val_per_class=2,
                                  image_size=32, seed=0)
    args = ["demo.yaml", *sets(f"data.root={data}", "train.epochs=2", "train.deterministic=true", *TINY)]

    def launch_one(name, workers=2, resume=(), **env):
        run = sets(f"output_dir={tmp_path / name}", "run_name=dp")
        return subprocess.Popen(["bash", str(MSRUN_SCRIPT), str(workers), *args, *run, *resume], cwd=tmp_path,
                                env=script_env(LOG_DIR=tmp_path / name / f"log{env.get('NODE_RANK', '')}", **env),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    proc = launch_one("reference", MASTER_PORT=free_port())
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    reference = digest_of(tmp_path / "reference" / "dp")

    port = free_port()  # two "nodes" on this machine: one worker each, the same world size of 2
    nodes = [launch_one("nodes", 1, NUM_NODES=2, NODE_RANK=n, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
             for n in (0, 1)]
    # On one machine both msruns find 127.0.0.1 among their own addresses, so each starts a scheduler; the one that
    # does not get the port fails and its msrun reports it after its worker has finished. Not so on two hosts.
    failed = [n for n, node in enumerate(nodes) if node.wait(timeout=300) != 0]
    assert len(failed) <= 1
    for n in failed:
        msrun_err = (tmp_path / "nodes" / f"log{n}" / "msrun.err").read_text()
        assert "Scheduler process" in msrun_err and "Worker process" not in msrun_err, msrun_err[-3000:]
    rank1 = (tmp_path / "nodes" / "dp" / "train_rank1.log").read_text()
    assert "data-parallel rank 1 of 2" in rank1 and final_digest(rank1) == reference
    assert digest_of(tmp_path / "nodes" / "dp") == reference

    run_dir = tmp_path / "killed" / "dp"
    proc = launch_one("killed", MASTER_PORT=free_port())
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not (
                (run_dir / "train_rank1.log").is_file() and "epoch 2 step 1/" in (run_dir / "train_rank1.log")
                .read_text()):
            time.sleep(0.05)
        worker_log = (tmp_path / "killed" / "log" / "worker_1.log").read_text()
        pid = int(re.search(r"DISTRIBUTED\((\d+),", worker_log).group(1))  # rank 1's process
        killed = time.time()
        os.kill(pid, 9)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and time.time() - killed < 120  # MindSpore's heartbeat timeout, about 30 s
    assert f"error: rank 1 (worker 1 of node 0, pid {pid}" in err and "killed by SIGKILL (signal 9" in err
    assert "--resume auto" in err
    state = train_state(read_checkpoint(run_dir / "last.ckpt"))  # complete: the CRC is checked
    assert (state.epoch, state.step_in_epoch) == (1, 0)
    proc = launch_one("killed", resume=["--resume", "auto"], MASTER_PORT=free_port())
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    assert digest_of(run_dir) == reference
