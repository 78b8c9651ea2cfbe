"""Time the wide network's matrix products with NumPy's BLAS (OpenBLAS in the PyPI wheel).

The same products as `cargo bench --bench cpu_kernels -- wide_gemm`, batch
512, layers 784-2048-2048-10, weights stored [out, in] as densetrain keeps
them: forward x . w^T, weight gradient dy^T . x, input gradient dy . w (not
for the first layer). Threads follow OPENBLAS_NUM_THREADS, which
cpu_compare.sh sets to the cores it pins.

Prints one line per product and a final `RESULT` line with the rate over a
whole step's products.
"""

import time

import numpy as np


def best_seconds(fn, min_seconds=0.7, rounds=5):
    fn()
    reps = 1
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        if time.perf_counter() - start > min_seconds / rounds:
            break
        reps *= 2
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def main():
    rows = 512
    sizes = [784, 2048, 2048, 10]
    rng = np.random.default_rng(1)
    total_flops = 0.0
    total_seconds = 0.0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        x = rng.standard_normal((rows, fan_in), dtype=np.float32)
        w = rng.standard_normal((fan_out, fan_in), dtype=np.float32)
        dy = rng.standard_normal((rows, fan_out), dtype=np.float32)
        products = [("forward", lambda: x @ w.T), ("weight_grad", lambda: dy.T @ x)]
        if layer > 0:
            products.append(("input_grad", lambda: dy @ w))
        for name, fn in products:
            seconds = best_seconds(fn)
            flops = 2.0 * rows * fan_in * fan_out
            total_flops += flops
            total_seconds += seconds
            print(f"{name} {fan_in}x{fan_out} {seconds * 1e3:.3f} ms {flops / seconds / 1e9:.1f} GFLOP/s")
    print(f"RESULT blas step_products_s {total_seconds:.5f} gflops {total_flops / total_seconds / 1e9:.1f}")


if __name__ == "__main__":
    main()
