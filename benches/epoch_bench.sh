#!/usr/bin/env bash
# Times whole training epochs of densetrain and of its peers (JAX always,
# PyTorch when it is installed) on Fashion-MNIST, same model, split and batch
# size, in one run, and prints the ratios.
#
# Usage: benches/epoch_bench.sh [THREADS] [EPOCHS]
#   THREADS  CPU cores both trainers may use (taskset); default: all cores
#   EPOCHS   epochs per trainer; default 10
#
# Needs: the Debian package dataset-fashion-mnist
#   (apt-get install -y dataset-fashion-mnist), python3 with venv, and /usr/bin/time.
# The JAX peer is installed on first use into target/bench-venv (about 100 MB from PyPI).
# PyTorch is timed when it imports in that environment; add it with
#   target/bench-venv/bin/pip install torch
# (the PyPI wheel and its CUDA dependencies take about 4 GB of disk).
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/checks.sh
check_arg_count 2 "THREADS EPOCHS" "$@"
threads=${1:-$(nproc)}
epochs=${2:-10}
data=/usr/share/datasets/fashion-mnist
check_threads "$threads"
check_count EPOCHS "$epochs" 1
cores="0-$((threads - 1))"

if [ ! -d "$data" ]; then
    echo "error: $data not found; install it with: apt-get install -y dataset-fashion-mnist" >&2
    exit 2
fi
venv=target/bench-venv
# Checked by importing, so an install that failed halfway is retried.
if ! "$venv/bin/python" -c "import jax, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet jax numpy
fi

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/densetrain"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== densetrain ($threads threads, $epochs epochs)"
/usr/bin/time -f "peak_rss_kib %M" -o "$out/dt.time" \
    taskset -c "$cores" "$bin" train --data fashion-mnist \
    --layers 256,128 --batch-size 128 --epochs "$epochs" --validation-split 0.1 \
    --optimizer adam --seed 1 --threads "$threads" --verbose 2 --evaluate-test \
    --out "$out/run" | tee "$out/dt.log"

echo "== JAX ($threads threads, $epochs epochs)"
/usr/bin/time -f "peak_rss_kib %M" -o "$out/jax.time" \
    taskset -c "$cores" "$venv/bin/python" benches/peer_jax.py --epochs "$epochs" \
    | tee "$out/jax.log"

if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "== PyTorch ($threads threads, $epochs epochs)"
    /usr/bin/time -f "peak_rss_kib %M" -o "$out/torch.time" \
        taskset -c "$cores" "$venv/bin/python" benches/peer_torch.py --epochs "$epochs" \
        | tee "$out/torch.log"
else
    echo "== PyTorch is not installed in $venv; left out (see this script's header)"
fi

"$venv/bin/python" - "$out" <<'PY'
import os, re, statistics, sys
out = sys.argv[1]
dt_log = open(f"{out}/dt.log").read()
secs = [float(s) for s in re.findall(r"^Epoch \d+/\d+ - \d+ batches - ([0-9.]+)s", dt_log, re.M)]
test = re.search(r"^Test \((\d+) rows\): loss [0-9.]+ - accuracy ([0-9.]+)", dt_log, re.M)
dt_rss = int(open(f"{out}/dt.time").read().split()[-1])
med = statistics.median(secs)
rows = 54000
print()
print("| trainer | median s/epoch (min-max) | samples/s | peak RSS MiB | test accuracy |")
print("|---|---|---|---|---|")
print(f"| densetrain | {med:.3f} ({min(secs):.3f}-{max(secs):.3f}) | {rows/med:.0f} | "
      f"{dt_rss/1024:.0f} | {float(test.group(2)):.4f} |")
ratios = []
for key, name in (("jax", "JAX"), ("torch", "PyTorch")):
    if not os.path.exists(f"{out}/{key}.log"):
        continue
    peer = re.search(rf"RESULT {key} median_epoch_s ([0-9.]+) min ([0-9.]+) max ([0-9.]+) "
                     r"samples_per_s (\d+) test_accuracy ([0-9.]+)", open(f"{out}/{key}.log").read())
    rss = int(open(f"{out}/{key}.time").read().split()[-1])
    pm = float(peer.group(1))
    print(f"| {name} | {pm:.3f} ({float(peer.group(2)):.3f}-{float(peer.group(3)):.3f}) | "
          f"{peer.group(4)} | {rss/1024:.0f} | {float(peer.group(5)):.4f} |")
    ratios.append(f"densetrain epoch time / {name} epoch time: {med/pm:.2f}")
print()
print("\n".join(ratios))
PY
