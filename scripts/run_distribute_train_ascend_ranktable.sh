#!/usr/bin/env bash
# Data-parallel training on Ascend clusters that are set up with a rank table file (RANK_TABLE_FILE), the
# launch method from before msrun. One process per device of this node, each bound to its share of the cores.
# This script sets up the cluster only; hyperparameters come from the config and the options it forwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
usage: bash scripts/run_distribute_train_ascend_ranktable.sh <rank_table.json> <config.yaml> [train.py options ...]

Starts one training process per device that the rank table lists for this node, with DEVICE_ID, RANK_ID
(from the table), RANK_SIZE (all devices in the table) and RANK_TABLE_FILE set, and waits for all of them;
if one fails, the others are stopped and the script exits with its status. The config and every option
after it (--set k=v, --resume auto|CKPT, --debug) go to each process's train.py unchanged.

  bash scripts/run_distribute_train_ascend_ranktable.sh /etc/hccl_8p.json configs/vit_b16.yaml \\
      --set data.root=/data/imagenet

Several nodes: run the same command on every node (the same rank table everywhere).
Environment:
  SERVER_ID   this node's server_id in the rank table (default: the only server, else the server whose
              server_id is an IP address of this node)
  LOG_DIR     per-rank folders LOG_DIR/rank_<RANK_ID>/ holding each process's output, worker.log
              (default ranktable_log)
  BIND_CORES  1: bind each process with taskset to an equal contiguous share of this node's cores (default);
              0: no binding
  BIND_NUMA   1: run each process under numactl on one NUMA node (CPUs and memory), the nodes dealt out to
              the devices in equal runs (replaces BIND_CORES; needs numactl); 0: no NUMA binding (default)
  DRY_RUN=1   print each rank's command instead of running it
Exported to every process (overridable):
  HCCL_CONNECT_TIMEOUT  seconds a rank waits for the others to link up, which they do after building their
                        graphs (default 1800, CANN's 120 is too short for ViT-L; 120..7200)
  HCCL_EXEC_TIMEOUT     seconds a collective waits for a late rank, e.g. while rank 0 writes a checkpoint
                        (default 3672; 1..17340)

Runs 'python' from PATH: activate the environment that has MindSpore and the Ascend toolkit first.
EOF
}

parse_launch_args "<rank_table.json>" "$@"
TABLE=$FIRST_ARG
shift 2
LOG_DIR=${LOG_DIR:-ranktable_log}
BIND_CORES=${BIND_CORES:-1}
BIND_NUMA=${BIND_NUMA:-0}

[[ -f $TABLE ]] || die "rank table '$TABLE' not found; pass the cluster's rank table JSON (e.g. made with hccl_tools.py)"
[[ $BIND_CORES == 0 || $BIND_CORES == 1 ]] || die "BIND_CORES must be 0 or 1, got '$BIND_CORES'"
require_nonempty LOG_DIR "$LOG_DIR" "a folder for the per-rank logs"
export_hccl_timeouts
require_bind_numa "$BIND_NUMA"
require_command python "each process runs the 'python' on PATH: activate the environment first"
if [[ $BIND_CORES == 1 && $BIND_NUMA == 0 ]]; then
    require_command taskset "install util-linux, or set BIND_CORES=0"
fi
TABLE=$(cd "$(dirname "$TABLE")" && pwd)/$(basename "$TABLE")  # absolute: every process reads it

plan=$(repo_python "$REPO_ROOT/scripts/rank_table.py" "$TABLE" "${SERVER_ID:-}") || exit $?
RANK_SIZE=$(head -n 1 <<<"$plan")
mapfile -t devices < <(tail -n +2 <<<"$plan")

ranks=() pids=() logs=()
stop_all() {  # TERM every process still running, KILL what is left after 10 s
    local pid waited=0
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    while ((waited < 10)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 1
        waited=$((waited + 1))
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'echo "interrupted: stopping all ranks" >&2; stop_all; exit 130' INT TERM

unbound=0
for line in "${devices[@]}"; do
    read -r device_id rank_id cpus numa <<<"$line"
    where=""
    rank_dir="$LOG_DIR/rank_$rank_id"
    cmd=(env "RANK_TABLE_FILE=$TABLE" "RANK_SIZE=$RANK_SIZE" "RANK_ID=$rank_id" "DEVICE_ID=$device_id"
         "HCCL_CONNECT_TIMEOUT=$HCCL_CONNECT_TIMEOUT" "HCCL_EXEC_TIMEOUT=$HCCL_EXEC_TIMEOUT")
    if [[ $BIND_NUMA == 1 && $numa != - ]]; then
        cmd+=(numactl "--cpunodebind=$numa" "--membind=$numa")
        where=" (numa node $numa)"
    elif [[ $BIND_NUMA == 1 ]]; then
        unbound=1
    elif [[ $BIND_CORES == 1 && $cpus != - ]]; then
        cmd+=(taskset -c "$cpus")
        where=" (cpus $cpus)"
    elif [[ $BIND_CORES == 1 ]]; then
        unbound=1
    fi
    cmd+=(python "$REPO_ROOT/train.py" --config "$CONFIG" "$@")
    if [[ ${DRY_RUN:-0} == 1 ]]; then
        echo "$(show_command "${cmd[@]}") > $(show_command "$rank_dir/worker.log") 2>&1 &"
        continue
    fi
    mkdir -p "$rank_dir"
    "${cmd[@]}" >"$rank_dir/worker.log" 2>&1 &
    pids+=($!) ranks+=("$rank_id") logs+=("$rank_dir/worker.log")
    echo "rank $rank_id on device $device_id$where: pid $!, log $rank_dir/worker.log"
done
if ((unbound)); then
    echo "warning: this node has fewer CPU cores than devices, or reports no NUMA nodes; the processes are not" \
         "bound" >&2
fi
if [[ ${DRY_RUN:-0} == 1 ]]; then
    exit 0
fi

# Wait for all; on the first failure stop the rest (they would wait for the failed rank forever).
running=${#pids[@]}
finished=()
while ((running > 0)); do
    for i in "${!pids[@]}"; do
        [[ -n ${finished[i]:-} ]] && continue
        kill -0 "${pids[i]}" 2>/dev/null && continue
        status=0
        wait "${pids[i]}" || status=$?
        finished[i]=1
        running=$((running - 1))
        if ((status != 0)); then
            echo "error: rank ${ranks[i]} exited with status $status; see ${logs[i]}. Stopping the other ranks." >&2
            stop_all
            exit "$status"
        fi
    done
    ((running == 0)) || sleep 1
done
echo "all ${#pids[@]} ranks of this node finished; logs in $LOG_DIR/rank_*/"
