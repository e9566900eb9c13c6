#!/usr/bin/env bash
# Data-parallel training with MindSpore's own launcher, msrun, on one node or several (Ascend, GPU or CPU).
# This script sets up the cluster only; hyperparameters come from the config and the --set options it forwards.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
usage: bash scripts/run_distribute_train.sh <workers_per_node> <config.yaml> [train.py options ...]

Starts <workers_per_node> training processes on this node (one per device) with msrun, which also starts its
scheduler process on node 0, and waits for all of them. The config and every option after it (--set k=v,
--resume auto|CKPT, --debug) go to each process's train.py unchanged. train.batch_size is per process
(or set train.global_batch_size).

  bash scripts/run_distribute_train.sh 8 configs/vit_b16.yaml --set data.root=/data/imagenet
  bash scripts/run_distribute_train.sh 8 configs/vit_b16.yaml --set data.root=/data/imagenet --resume auto

Several nodes: run the same command on every node with the same NUM_NODES, MASTER_ADDR and MASTER_PORT and
each node's own NODE_RANK. Environment (cluster layout only):
  NUM_NODES         nodes in the job (default 1)
  NODE_RANK         this node's index, 0..NUM_NODES-1 (default 0); node 0 runs the scheduler
  MASTER_ADDR       IP address of node 0 that every node can reach (default 127.0.0.1)
  MASTER_PORT       port of the scheduler on node 0; must be free there (default 8118)
  LOG_DIR           msrun's log folder on this node: scheduler.log, worker_<rank>.log (default msrun_log)
  CLUSTER_TIME_OUT  seconds to wait for all processes of all nodes to join (default 600)
  BIND_NUMA         1: msrun binds each process to the NUMA node of its device (--bind_numa=True, needs numactl);
                    a JSON file: msrun's own binding file; 0: no binding (default)
  DRY_RUN=1         print the environment and the msrun command instead of running them
Exported to every process (Ascend; overridable):
  HCCL_CONNECT_TIMEOUT  seconds a rank waits for the others to link up, which they do after building their
                        graphs (default 1800, CANN's 120 is too short for ViT-L; 120..7200)
  HCCL_EXEC_TIMEOUT     seconds a collective waits for a late rank, e.g. while rank 0 writes a checkpoint
                        (default 3672; 1..17340)

Runs msrun and 'python' from PATH: activate the environment that has MindSpore first.
Exit status: 0 when every process finished cleanly, else non-zero (msrun then stops the other processes).
EOF
}

parse_launch_args "<workers_per_node>" "$@"
WORKERS=$FIRST_ARG
shift 2

NUM_NODES=${NUM_NODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-8118}
LOG_DIR=${LOG_DIR:-msrun_log}
CLUSTER_TIME_OUT=${CLUSTER_TIME_OUT:-600}
BIND_NUMA=${BIND_NUMA:-0}

require_int "<workers_per_node> (first argument)" "$WORKERS" 1
require_int NUM_NODES "$NUM_NODES" 1
require_int NODE_RANK "$NODE_RANK" 0 $((10#$NUM_NODES - 1))
require_int MASTER_PORT "$MASTER_PORT" 1024 65535
require_int CLUSTER_TIME_OUT "$CLUSTER_TIME_OUT" 1
require_nonempty MASTER_ADDR "$MASTER_ADDR" "the IP address of node 0"
require_nonempty LOG_DIR "$LOG_DIR" "a folder for msrun's logs"
export_hccl_timeouts
require_bind_numa "$BIND_NUMA" 1

WORKERS=$((10#$WORKERS))
TOTAL=$((10#$NUM_NODES * WORKERS))
cmd=(msrun "--worker_num=$TOTAL" "--local_worker_num=$WORKERS" "--master_addr=$MASTER_ADDR"
     "--master_port=$MASTER_PORT" "--node_rank=$NODE_RANK" "--log_dir=$LOG_DIR" --join=True
     "--cluster_time_out=$CLUSTER_TIME_OUT")
if [[ $BIND_NUMA == 1 ]]; then
    cmd+=(--bind_numa=True)
elif [[ $BIND_NUMA != 0 ]]; then
    cmd+=("--bind_numa=$(cd "$(dirname "$BIND_NUMA")" && pwd)/$(basename "$BIND_NUMA")")
fi
cmd+=("$REPO_ROOT/train.py" --config "$CONFIG" "$@")

if [[ ${DRY_RUN:-0} == 1 ]]; then
    show_command "HCCL_CONNECT_TIMEOUT=$HCCL_CONNECT_TIMEOUT" "HCCL_EXEC_TIMEOUT=$HCCL_EXEC_TIMEOUT" "${cmd[@]}"
    exit 0
fi
require_command msrun "it comes with MindSpore 2.3 or newer: activate the environment that has MindSpore"
require_command python "msrun starts each process with the 'python' on PATH: activate the environment first"

echo "node $NODE_RANK of $NUM_NODES: $WORKERS processes (ranks $((NODE_RANK * WORKERS))..$((NODE_RANK * WORKERS + WORKERS - 1)) of $TOTAL), scheduler $MASTER_ADDR:$MASTER_PORT, logs in $LOG_DIR/"
mkdir -p "$LOG_DIR" || die "cannot create LOG_DIR '$LOG_DIR'"
status=0
# msrun's stderr is also kept in $LOG_DIR/msrun.err: it names the process that failed (by pid)
"${cmd[@]}" 2> >(tee "$LOG_DIR/msrun.err" >&2) || status=$?
if ((status != 0)); then
    # which rank failed, and how (a signal, an exit status), from msrun's output and worker logs
    python "$REPO_ROOT/scripts/launch_report.py" "$LOG_DIR" "$NODE_RANK" "$WORKERS" || true
    echo "error: distributed training failed (msrun exit status $status); see $LOG_DIR/worker_*.log and" \
         "$LOG_DIR/scheduler.log, and train_rank<N>.log in the run directory" >&2
    exit "$status"
fi
