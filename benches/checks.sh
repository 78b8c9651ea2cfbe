# Argument checks shared by the benchmark scripts, which source this file.
# Each check prints one error naming the argument and exits with status 2.

# check_arg_count MAX USAGE ARGS...: accepts at most MAX arguments, named in USAGE.
check_arg_count() {
    local max=$1 usage=$2
    shift 2
    if [ $# -gt "$max" ]; then
        echo "error: expected at most $max arguments ($usage), got $#: $*" >&2
        exit 2
    fi
}

# check_count NAME VALUE MIN [REASON]: accepts a whole number of at least MIN.
check_count() {
    local name=$1 value=$2 min=$3 reason=${4:-}
    if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$value" -lt "$min" ]; then
        echo "error: $name must be a whole number of at least $min${reason:+ ($reason)}, got $value" >&2
        exit 2
    fi
}

# check_threads VALUE: accepts a thread count between 1 and the machine's cores.
check_threads() {
    local value=$1 cores
    cores=$(nproc)
    if ! [[ "$value" =~ ^[0-9]+$ ]] || [ "$value" -lt 1 ] || [ "$value" -gt "$cores" ]; then
        echo "error: THREADS must be between 1 and $cores (the cores of this machine), got $value" >&2
        exit 2
    fi
}
