#!/usr/bin/env bash
# Runs the whole CPU comparison at once, on the same cores. It times
# densetrain, JAX and (when installed, see epoch_bench.sh) PyTorch on the
# small task with 2 threads and with 1 thread, then on the wide network
# 784-2048-2048-10 at batch 512. It also measures the gemm crate's rate on the
# wide network's matrix products, and NumPy's BLAS (OpenBLAS) on the same
# products (benches/peer_blas_gemm.py) as the reference for what a tuned
# BLAS reaches on these cores.
#
# Usage: benches/cpu_compare.sh [EPOCHS] [WIDE_EPOCHS]
#   EPOCHS       epochs per trainer on the small task; default 10
#   WIDE_EPOCHS  epochs per trainer on the wide network; default 2 (the
#                fastest epoch is compared, so JAX's compilation and
#                PyTorch's first-epoch warm-up are left out)
#
# Needs what benches/epoch_bench.sh needs, and at least 2 cores.
# Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

source benches/checks.sh
check_arg_count 2 "EPOCHS WIDE_EPOCHS" "$@"
epochs=${1:-10}
wide_epochs=${2:-2}
venv=target/bench-venv
bin="${CARGO_TARGET_DIR:-target}/release/densetrain"

check_count EPOCHS "$epochs" 1
check_count WIDE_EPOCHS "$wide_epochs" 1
if [ "$(nproc)" -lt 2 ]; then
    echo "error: this comparison pins 2 cores, and this machine has $(nproc)" >&2
    exit 2
fi
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    has_torch=1
else
    has_torch=0
    echo "note: PyTorch is not installed in $venv; it is left out of this comparison"
fi

for threads in 2 1; do
    echo "=== small task, $threads thread(s)"
    benches/epoch_bench.sh "$threads" "$epochs"
done

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "=== wide network 784-2048-2048-10, batch 512, 2 threads, $wide_epochs epoch(s)"
/usr/bin/time -f "peak_rss_kib %M" -o "$out/dt.time" \
    taskset -c 0-1 "$bin" train --data fashion-mnist \
    --layers 2048,2048 --batch-size 512 --epochs "$wide_epochs" --validation-split 0.1 \
    --optimizer adam --seed 1 --threads 2 --verbose 2 --out "$out/run" | tee "$out/dt.log"
/usr/bin/time -f "peak_rss_kib %M" -o "$out/jax.time" \
    taskset -c 0-1 "$venv/bin/python" benches/peer_jax.py --layers 2048,2048 \
    --batch-size 512 --epochs "$wide_epochs" | tee "$out/jax.log"
if [ "$has_torch" = 1 ]; then
    /usr/bin/time -f "peak_rss_kib %M" -o "$out/torch.time" \
        taskset -c 0-1 "$venv/bin/python" benches/peer_torch.py --layers 2048,2048 \
        --batch-size 512 --epochs "$wide_epochs" | tee "$out/torch.log"
fi

echo "=== gemm crate on the wide network's products, 2 threads"
DENSETRAIN_BENCH_THREADS=2 taskset -c 0-1 cargo bench --quiet --bench cpu_kernels -- wide_gemm \
    2>&1 | grep -v '^warning' | tee "$out/gemm.log"

echo "=== NumPy's BLAS on the same products, 2 threads"
OPENBLAS_NUM_THREADS=2 taskset -c 0-1 "$venv/bin/python" benches/peer_blas_gemm.py \
    | tee "$out/blas.log"

"$venv/bin/python" - "$out" <<'PY'
import os, re, sys
out = sys.argv[1]
rows, batch = 54000, 512
sizes = [784, 2048, 2048, 10]
params = sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:]))
# 6 flops per parameter and row, less the first layer's input gradient.
flops = 6 * params * rows - 2 * rows * sizes[0] * sizes[1]

dt = [float(s) for s in re.findall(r"^Epoch \d+/\d+ - \d+ batches - ([0-9.]+)s",
                                   open(f"{out}/dt.log").read(), re.M)]
dt_rss = int(open(f"{out}/dt.time").read().split()[-1])
trainers = [("densetrain", dt, dt_rss)]
for key, name in (("jax", "JAX"), ("torch", "PyTorch")):
    if os.path.exists(f"{out}/{key}.log"):
        secs = [float(s) for s in re.findall(r"^epoch \d+ ([0-9.]+)s",
                                             open(f"{out}/{key}.log").read(), re.M)]
        trainers.append((name, secs, int(open(f"{out}/{key}.time").read().split()[-1])))

unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
gemm_s = 0.0
for name, i, o, mid, u in re.findall(
        r"wide_gemm/(\w+)/(\d+)x(\d+)\s+time:\s+\[\S+ \S+ ([0-9.]+) (\S+)",
        open(f"{out}/gemm.log").read()):
    gemm_s += float(mid) * unit[u]
steps = rows / batch
gemm_rate = flops / (gemm_s * steps) / 1e9

print()
print("| wide network, 2 threads | fastest s/epoch (all) | GFLOP/s | share of gemm rate | peak RSS MiB |")
print("|---|---|---|---|---|")
for name, secs, rss in trainers:
    best = min(secs)
    rate = flops / best / 1e9
    print(f"| {name} | {best:.2f} ({', '.join(f'{s:.2f}' for s in secs)}) | {rate:.0f} | "
          f"{rate / gemm_rate:.2f} | {rss / 1024:.0f} |")
print()
print(f"gemm crate on the wide products: {gemm_rate:.0f} GFLOP/s "
      f"({gemm_s * steps:.2f} s of products per epoch)")
blas = re.search(r"RESULT blas step_products_s ([0-9.]+) gflops ([0-9.]+)",
                 open(f"{out}/blas.log").read())
blas_rate = float(blas.group(2))
print(f"NumPy's BLAS on the same products: {blas_rate:.0f} GFLOP/s "
      f"(gemm crate / BLAS: {gemm_rate / blas_rate:.2f})")
for name, secs, _ in trainers[1:]:
    print(f"densetrain epoch time / {name} epoch time (wide): {min(dt) / min(secs):.2f}")
PY
