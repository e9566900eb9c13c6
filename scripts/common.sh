# Shared by the launch scripts (sourced, not run): the repository root, argument checks, error messages.
# Errors exit with status 2, like the user errors of train.py.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "error: $*" >&2
    exit 2
}

# parse_launch_args FIRST_NAME "$@": both scripts take <FIRST_NAME> <config.yaml> [train.py options ...]. -h/--help
# prints the script's usage (its `usage` function) and exits 0; fewer than two arguments print it and fail. Sets
# FIRST_ARG and CONFIG (checked to exist); the caller then runs `shift 2` and forwards "$@" to train.py.
parse_launch_args() {
    local first_name=$1
    shift
    if [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]]; then
        usage
        exit 0
    fi
    if [[ $# -lt 2 ]]; then
        usage >&2
        die "expected $first_name and <config.yaml>, got $# argument(s)"
    fi
    FIRST_ARG=$1
    CONFIG=$2
    require_config "$CONFIG"
}

# require_nonempty NAME VALUE WHAT: an environment setting that must not be empty.
require_nonempty() {
    [[ -n $2 ]] || die "$1 is empty; set it to $3"
}

# repo_python ARGS...: the 'python' on PATH with this repository importable (scripts/rank_table.py uses vit_ms).
repo_python() {
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" python "$@"
}

# require_int NAME VALUE MIN [MAX]: VALUE is a decimal integer in [MIN, MAX].
require_int() {
    local name=$1 value=$2 min=$3 max=${4:-}
    local range=">= $min"
    [[ -n $max ]] && range="in $min..$max"
    [[ $value =~ ^[0-9]+$ ]] || die "$name must be an integer $range, got '$value'"
    value=$((10#$value))
    ((value >= min)) || die "$name must be an integer $range, got $value"
    [[ -z $max ]] || ((value <= max)) || die "$name must be an integer $range, got $value"
}

# require_config NAME: the lookup train.py does (the path as given, else configs/NAME or configs/NAME.yaml).
# The name itself is passed on unchanged; this only fails early, before any process starts.
require_config() {
    local name=$1 candidate
    for candidate in "$name" "$REPO_ROOT/configs/$name" "$REPO_ROOT/configs/$name.yaml"; do
        [[ -f $candidate ]] && return 0
    done
    local known
    known=$(cd "$REPO_ROOT/configs" && ls -- *.yaml 2>/dev/null | tr '\n' ' ')
    die "config file '$name' not found (looked in $(pwd) and $REPO_ROOT/configs); available configs: $known"
}

# require_command NAME HINT
require_command() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not on PATH; $2"
}

# show_command WORD...: the words quoted so that the line can be pasted into a shell.
show_command() {
    local out
    printf -v out '%q ' "$@"
    echo "${out% }"
}

# export_hccl_timeouts: HCCL's timeouts sized for ViT-L, overridable from the environment. Every rank waits at its
# first collective until the slowest rank has built its graph (tens of minutes for ViT-L on a busy node; CANN's
# default link timeout is 120 s), and at the next collective while rank 0 writes a checkpoint (ViT-L with AdamW
# state is about 3.6 GB) and evaluates. Ranges: CANN's, the intersection over Atlas training, A2 and A3.
export_hccl_timeouts() {
    HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-1800}
    HCCL_EXEC_TIMEOUT=${HCCL_EXEC_TIMEOUT:-3672}  # 54 x 68 s: the first-generation 910 rounds down to 68 s steps
    require_int HCCL_CONNECT_TIMEOUT "$HCCL_CONNECT_TIMEOUT" 120 7200
    require_int HCCL_EXEC_TIMEOUT "$HCCL_EXEC_TIMEOUT" 1 17340
    export HCCL_CONNECT_TIMEOUT=$((10#$HCCL_CONNECT_TIMEOUT)) HCCL_EXEC_TIMEOUT=$((10#$HCCL_EXEC_TIMEOUT))
}

# require_bind_numa VALUE [FILE_OK]: BIND_NUMA is 0, 1 (or, with FILE_OK, an msrun binding file); anything but 0
# needs numactl, except for a dry run.
require_bind_numa() {
    local value=$1 file_ok=${2:-0}
    [[ $value == 0 || $value == 1 || ($file_ok == 1 && -f $value) ]] ||
        die "BIND_NUMA must be 0 or 1$( ((file_ok)) && echo " or an existing msrun NUMA binding file (JSON)"), got '$value'"
    [[ $value == 0 || ${DRY_RUN:-0} == 1 ]] || require_command numactl \
        "NUMA binding runs each process under numactl: install it (e.g. apt-get install numactl) or set BIND_NUMA=0"
}
