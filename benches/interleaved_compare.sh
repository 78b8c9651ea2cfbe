#!/usr/bin/env bash
# Times densetrain, JAX and (when installed) PyTorch in alternation on
# Fashion-MNIST. Each round trains every trainer for a few epochs, one after
# the other, and the ratios are taken within each round. A change of the
# host's load between rounds therefore reaches all trainers alike.
# benches/interleaved_compare.py describes how the times are taken.
#
# Usage: benches/interleaved_compare.sh [THREADS] [TASK] [ROUNDS] [EPOCHS]
#   THREADS  cores all trainers may use (taskset); default: all cores
#   TASK     small (784-256-128-10, batch 128) or wide (784-2048-2048-10,
#            batch 512); default small
#   ROUNDS   rounds; default 6
#   EPOCHS   epochs per trainer and round, the first left out; default 3
#
# Needs what benches/epoch_bench.sh needs; run that script once first, as it
# creates target/bench-venv with JAX. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/checks.sh
check_arg_count 4 "THREADS TASK ROUNDS EPOCHS" "$@"
threads=${1:-$(nproc)}
task=${2:-small}
rounds=${3:-6}
epochs=${4:-3}
venv=target/bench-venv
check_threads "$threads"
if [ "$task" != small ] && [ "$task" != wide ]; then
    echo "error: TASK must be small or wide, got $task" >&2
    exit 2
fi
check_count ROUNDS "$rounds" 1
check_count EPOCHS "$epochs" 2 "each trainer's first epoch is left out"
if ! "$venv/bin/python" -c "import jax, numpy" 2>/dev/null; then
    echo "error: JAX is not installed in $venv; run benches/epoch_bench.sh once first" >&2
    exit 2
fi
torch=()
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    torch=(--torch)
else
    echo "note: PyTorch is not installed in $venv; it is left out (see benches/epoch_bench.sh)"
fi

cargo build --release --quiet
"$venv/bin/python" benches/interleaved_compare.py \
    --bin "${CARGO_TARGET_DIR:-target}/release/densetrain" \
    --threads "$threads" --task "$task" --rounds "$rounds" --epochs "$epochs" "${torch[@]}"
