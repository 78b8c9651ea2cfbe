#!/usr/bin/env bash
# Times whole training epochs of densetrain and of a JAX peer on Fashion-MNIST,
# same model, split and batch size, in one run, and prints the ratios.
#
# Usage: benches/epoch_bench.sh [THREADS] [EPOCHS]
#   THREADS  CPU cores both trainers may use (taskset); default: all cores
#   EPOCHS   epochs per trainer; default 10
#
# Needs: the Debian package dataset-fashion-mnist
#   (apt-get install -y dataset-fashion-mnist), python3 with venv, and /usr/bin/time.
# The JAX peer is installed on first use into target/bench-venv (about 100 MB from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

threads=${1:-$(nproc)}
epochs=${2:-10}
data=/usr/share/datasets/fashion-mnist
cores="0-$((threads - 1))"

if [ ! -d "$data" ]; then
    echo "error: $data not found; install it with: apt-get install -y dataset-fashion-mnist" >&2
    exit 2
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
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

"$venv/bin/python" - "$out" <<'PY'
import re, statistics, sys
out = sys.argv[1]
dt_log = open(f"{out}/dt.log").read()
secs = [float(s) for s in re.findall(r"^Epoch \d+/\d+ - \d+ batches - ([0-9.]+)s", dt_log, re.M)]
test = re.search(r"^Test \((\d+) rows\): loss [0-9.]+ - accuracy ([0-9.]+)", dt_log, re.M)
dt_rss = int(open(f"{out}/dt.time").read().split()[-1])
jax = re.search(r"RESULT jax median_epoch_s ([0-9.]+) min ([0-9.]+) max ([0-9.]+) "
                r"samples_per_s (\d+) test_accuracy ([0-9.]+)", open(f"{out}/jax.log").read())
jax_rss = int(open(f"{out}/jax.time").read().split()[-1])
med = statistics.median(secs)
rows = 54000
print()
print("| trainer | median s/epoch (min-max) | samples/s | peak RSS MiB | test accuracy |")
print("|---|---|---|---|---|")
print(f"| densetrain | {med:.3f} ({min(secs):.3f}-{max(secs):.3f}) | {rows/med:.0f} | "
      f"{dt_rss/1024:.0f} | {float(test.group(2)):.4f} |")
jm = float(jax.group(1))
print(f"| JAX | {jm:.3f} ({float(jax.group(2)):.3f}-{float(jax.group(3)):.3f}) | "
      f"{jax.group(4)} | {jax_rss/1024:.0f} | {float(jax.group(5)):.4f} |")
print()
print(f"densetrain epoch time / JAX epoch time: {med/jm:.2f}")
PY
