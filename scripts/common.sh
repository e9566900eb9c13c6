# Shared by the launch scripts (sourced, not run): the repository root, argument checks, error messages.
# Errors exit with status 2, like the user errors of train.py.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "error: $*" >&2
    exit 2
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
