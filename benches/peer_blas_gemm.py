"""Time the wide network's matrix products with NumPy's BLAS (OpenBLAS in the PyPI wheel).

The same products as `cargo bench --bench cpu_kernels -- wide_gemm`, batch
512, layers 784-2048-2048-10, weights stored [out, in] as densetrain keeps
them: forward x . w^T, weight gradient dy^T . x, input gradient dy . w (not
for the first layer). Threads follow OPENBLAS_NUM_THREADS, which
cpu_compare.sh sets to the cores it pins.

Prints one line per product and a `RESULT` line with the rate over a whole
step's products, then the rates on the shapes of the `gemm_choice` group.
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

    # The shapes of the gemm_choice group of benches/cpu_kernels.rs:
    # (name, m, n, k, b stored transposed as [n, k]).
    for name, m, n, k, b_transposed in (
        ("small_forward_784x256", 128, 256, 784, True),
        ("small_weight_grad_784x256", 256, 784, 128, False),
        ("small_forward_256x128", 128, 128, 256, True),
        ("wide_forward_2048x2048", 512, 2048, 2048, True),
    ):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if b_transposed else (k, n), dtype=np.float32)
        product = (lambda: a @ b.T) if b_transposed else (lambda: a @ b)
        seconds = best_seconds(product)
        print(f"gemm_choice {name} {2.0 * m * n * k / seconds / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
