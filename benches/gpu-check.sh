#!/usr/bin/env bash
# Runs densetrain's GPU tests and benchmarks on a GPU machine, from binaries
# built elsewhere (the machine needs no Rust toolchain), and prints a short
# table last. Planned to finish in under 4 minutes on one H200.
#
# Usage, from the repository root (tests/data must be present):
#   benches/gpu-check.sh --bin BIN --tests DIR [--fashion-mnist DIR] [--out DIR]
#     --bin BIN            the release binary (cargo build --release)
#     --tests DIR          the test executables of `cargo test --release --no-run`
#                          (target/release/deps)
#     --fashion-mnist DIR  Fashion-MNIST IDX files; adds the Fashion-MNIST benchmarks,
#                          the CPU accuracy comparison and the PyTorch peer
#     --out DIR            where logs go (default gpu-check/)
#
# CUDA libraries are taken from the loader's cache, CUDA_HOME, /usr/local/cuda*,
# and the nvidia-* Python wheels (e.g. the ones PyTorch installs), in that order.
# Exit status: 0 when every test passed, 1 otherwise.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

bin="" tests="" fashion="" out="$repo/gpu-check"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$(realpath "$2"); shift 2 ;;
        --tests) tests=$(realpath "$2"); shift 2 ;;
        --fashion-mnist) fashion=$(realpath "$2"); shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "error: unknown argument '$1'; see the usage at the top of $0" >&2; exit 2 ;;
    esac
done
if [ ! -x "$bin" ] || [ ! -d "$tests" ]; then
    echo "error: --bin must name the densetrain binary and --tests the directory of test executables" >&2
    exit 2
fi
mkdir -p "$out"
started=$(date +%s)
rows=()      # table rows: "name | value | note"
failures=0
declare -A test_accuracy  # by benchmark label

row() { rows+=("$1 | $2 | $3"); }
elapsed() { echo $(( $(date +%s) - started )); }

# --- CUDA libraries -------------------------------------------------------
has_library() {
    ldconfig -p 2>/dev/null | grep -q "$1" && return 0
    local dir dirs
    IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
    for dir in "${dirs[@]}"; do
        ls "$dir/$1"* >/dev/null 2>&1 && return 0
    done
    return 1
}
candidate_dirs=()
[ -n "${CUDA_HOME:-}" ] && candidate_dirs+=("$CUDA_HOME/lib64" "$CUDA_HOME/lib")
for dir in /usr/local/cuda/lib64 /usr/local/cuda-*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib; do
    candidate_dirs+=("$dir")
done
for python in python3 /opt/conda/bin/python3; do
    command -v "$python" >/dev/null 2>&1 || continue
    site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null) || continue
    for dir in "$site"/nvidia/*/lib; do candidate_dirs+=("$dir"); done
done
for library in libcublas.so libcublasLt.so libnvrtc.so; do
    if has_library "$library"; then continue; fi
    for dir in "${candidate_dirs[@]}"; do
        if ls "$dir/$library".1[0-9]* >/dev/null 2>&1; then
            export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "Using $library from $dir"
            break
        fi
    done
done

# --- The machine ------------------------------------------------------------
gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1)
cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | grep -o '[0-9.]*$')
echo "GPU: ${gpu_name:-unknown}, driver ${driver:-unknown}, CUDA ${cuda:-unknown}, $(date -u +%Y-%m-%d)"
"$bin" info | tee "$out/info.txt"

# --- Tests ------------------------------------------------------------------
export DENSETRAIN_REQUIRE_GPU=1 DENSETRAIN_BIN="$bin" DENSETRAIN_TEST_DATA="$repo/tests/data"
test_executable() { ls -t "$tests/$1"-* 2>/dev/null | grep -v '\.d$' | head -n 1; }
run_tests() {
    local name=$1; shift
    local exe
    exe=$(test_executable "$name")
    if [ -z "$exe" ]; then
        row "tests $name" "missing" "no $name-* in $tests"
        failures=$((failures + 1))
        return
    fi
    local log="$out/test-$name${TEST_SUFFIX:-}.log"
    if timeout 150 "$exe" "$@" >"$log" 2>&1; then
        row "tests $name${TEST_SUFFIX:-}" "pass" "$(grep -o '[0-9]* passed' "$log" | head -n 1)"
    else
        row "tests $name${TEST_SUFFIX:-}" "FAIL" "see $log"
        failures=$((failures + 1))
        tail -n 30 "$log"
    fi
}
for name in kernels_embedded kernels_nvrtc gpu_fallback gpu_primitives gpu_training; do
    run_tests "$name"
done
# NVIDIA_TF32_OVERRIDE=1 must not turn f32 products into TF32 ones.
TEST_SUFFIX=" (NVIDIA_TF32_OVERRIDE=1)" NVIDIA_TF32_OVERRIDE=1 run_tests gpu_primitives f32_products_stay_exact
echo "Tests done after $(elapsed)s"

# --- Benchmarks ---------------------------------------------------------------
bench_log="$out/bench-wide-mlp.log"
exe=$(test_executable gpu_bench)
if [ -n "$exe" ] && timeout 120 "$exe" --ignored --nocapture >"$bench_log" 2>&1; then
    value() { grep "RESULT $1 " "$bench_log" | awk '{print $3}'; }
    row "cuBLAS bf16 GEMM 8192^3" "$(value gemm_bf16_tflops) TFLOP/s" ""
    row "cuBLAS f32 GEMM 8192^3" "$(value gemm_f32_tflops) TFLOP/s" "no TF32"
    row "wide MLP 8192x3, batch 8192, bf16" "$(value wide_mlp_bf16_tflops) TFLOP/s" \
        "$(value wide_mlp_bf16_fraction_of_gemm) of the GEMM; goal 0.80"
else
    row "wide MLP benchmark" "FAIL" "see $bench_log"
    failures=$((failures + 1))
fi

# Trains with `--verbose 2` and adds a row: median seconds per epoch and samples/s.
train_bench() {
    local label=$1; shift
    local log="$out/train-${label// /_}.log"
    if ! timeout 120 "$bin" train --verbose 2 --seed 1 --out "$out/run-${label// /_}" "$@" >"$log" 2>&1; then
        row "$label" "FAIL" "see $log"
        failures=$((failures + 1))
        return
    fi
    local median samples test
    median=$(grep -oE '^Epoch [0-9]+/[0-9]+ - [0-9]+ batches - [0-9.]+s' "$log" \
        | awk '{print $NF}' | tr -d s | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    samples=$(grep -oE '[0-9,]+ samples/s' "$log" | head -n 1)
    test=$(grep -oE 'Test \([0-9]+ rows\): loss [0-9.]+ - accuracy [0-9.]+' "$log" | awk '{print $NF}')
    test_accuracy[$label]=$test
    row "$label" "${median}s/epoch, $samples" "${test:+test accuracy $test}"
}
rm -rf "$out"/run-*

train_bench "digits f32 b128 (cuda)" --data digits --device cuda --layers 256,128 --batch-size 128 --epochs 5
train_bench "digits bf16 b128 (cuda)" --data digits --device cuda --precision bf16 --layers 256,128 \
    --batch-size 128 --epochs 5

# Generated data: 100,000 rows, 64 features, 10 classes from a fixed linear rule.
generated="$out/generated.csv"
if [ ! -s "$generated" ]; then
    awk 'BEGIN {
        srand(7);
        for (j = 0; j < 64; j++) printf "x%d,", j; print "label";
        for (i = 0; i < 100000; i++) {
            best = -1e9; label = 0;
            for (j = 0; j < 64; j++) { v = 2 * rand() - 1; printf "%.4f,", v; s[j % 10] += v * (j + 1) }
            for (c = 0; c < 10; c++) { if (s[c] > best) { best = s[c]; label = c } s[c] = 0 }
            print label
        }
    }' >"$generated"
fi
train_bench "generated f32 b1024 (cuda)" --data "$generated" --target label --device cuda \
    --layers 512,256 --batch-size 1024 --epochs 3
train_bench "generated bf16 b1024 (cuda)" --data "$generated" --target label --device cuda \
    --precision bf16 --layers 512,256 --batch-size 1024 --epochs 3

if [ -n "$fashion" ]; then
    for precision in f32 bf16; do
        for batch in 128 1024; do
            train_bench "fashion-mnist $precision b$batch (cuda)" --data "$fashion" --device cuda \
                --precision "$precision" --layers 256,128 --optimizer adam --batch-size "$batch" \
                --epochs 3 --validation-split 0.1 --evaluate-test
        done
    done
    # Accuracy against the CPU: after the same 3 epochs, the test accuracies
    # must agree within 1.5 percentage points (150 of the 10,000 test images).
    train_bench "fashion-mnist f32 b128 (cpu)" --data "$fashion" --device cpu --layers 256,128 \
        --optimizer adam --batch-size 128 --epochs 3 --validation-split 0.1 --evaluate-test
    gpu_acc=${test_accuracy["fashion-mnist f32 b128 (cuda)"]:-}
    cpu_acc=${test_accuracy["fashion-mnist f32 b128 (cpu)"]:-}
    if [ -n "$gpu_acc" ] && [ -n "$cpu_acc" ] \
        && awk -v g="$gpu_acc" -v c="$cpu_acc" 'BEGIN { d = g - c; if (d < 0) d = -d; exit !(d <= 0.015) }'; then
        row "fashion-mnist accuracy GPU vs CPU" "$gpu_acc vs $cpu_acc" "within 0.015"
    else
        row "fashion-mnist accuracy GPU vs CPU" "FAIL" "${gpu_acc:-?} vs ${cpu_acc:-?}, allowed 0.015"
        failures=$((failures + 1))
    fi
    if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
        for precision in f32 bf16; do
            for batch in 128 1024; do
                log="$out/torch-$precision-b$batch.log"
                if timeout 120 python3 "$repo/benches/peer_torch_gpu.py" --data "$fashion" \
                    --precision "$precision" --batch-size "$batch" --epochs 3 >"$log" 2>&1; then
                    result=$(grep '^RESULT' "$log")
                    row "fashion-mnist $precision b$batch (pytorch eager)" \
                        "$(echo "$result" | awk '{print $4}')s/epoch, $(echo "$result" | awk '{print $10}') samples/s" \
                        "test accuracy $(echo "$result" | awk '{print $12}')"
                else
                    row "fashion-mnist $precision b$batch (pytorch eager)" "FAIL" "see $log"
                fi
            done
        done
    else
        row "pytorch peer" "skipped" "python3 with a CUDA build of torch not found"
    fi
else
    row "fashion-mnist" "skipped" "no --fashion-mnist DIR given"
fi

# --- Table ------------------------------------------------------------------
echo
echo "densetrain GPU check: ${gpu_name:-unknown GPU}, driver ${driver:-?}, CUDA ${cuda:-?}, $(date -u +%Y-%m-%d), $(elapsed)s"
echo "| check | result | note |"
echo "|---|---|---|"
for r in "${rows[@]}"; do echo "| $r |"; done
[ "$failures" -eq 0 ]
