// Loss kernels: softmax cross-entropy, sigmoid binary cross-entropy and mean
// squared error with their gradients, the predictions, and the reductions of
// loss and metrics into the statistics buffer.
//
// One thread handles one row in f64, with the CPU backend's formulas, so each
// row's loss and gradient match it up to the last bit of `exp` and `log`.
// Rows are summed per block in a fixed order and blocks are added with
// atomics, so the loss sum can differ from the CPU's in the last bits.

#include "common.cuh"

// `1 / (1 + exp(-z))` without overflow for large |z| (the CPU's `sigmoid`).
__device__ __forceinline__ double stable_sigmoid(double z) {
    if (z >= 0.0) {
        return 1.0 / (1.0 + exp(-z));
    }
    double e = exp(z);
    return e / (1.0 + e);
}

// Checks that `target` is a class index below `classes`; records the first bad one.
__device__ __forceinline__ bool class_index(float target, u32 classes, u32 row, u64* stats, u32* out) {
    if (target >= 0.0f && target < (float)classes && truncf(target) == target) {
        *out = (u32)target;
        return true;
    }
    u64 previous = atomicCAS(stats + STAT_BAD_TARGET_ROW, 0ull, (u64)row + 1);
    if (previous == 0) {
        stats[STAT_BAD_TARGET_VALUE] = (u64)__float_as_uint(target);
    }
    return false;
}

// Adds one block's sums to the statistics and raises the non-finite flag.
__device__ __forceinline__ void add_block_stats(
    u64* stats, double loss, double correct, double abs_error, bool regression, u32 rows,
    u64 batch, double* shared) {
    double loss_sum = block_sum(loss, shared);
    double metric_sum = block_sum(regression ? abs_error : correct, shared);
    if (threadIdx.x == 0) {
        stat_add(stats, STAT_LOSS, loss_sum);
        stat_add(stats, regression ? STAT_ABS_ERROR : STAT_CORRECT, metric_sum);
        if (blockIdx.x == 0) {
            stat_add(stats, STAT_ROWS, (double)rows);
        }
    }
    // A sum is not finite exactly when one of its terms is not (no finite
    // row loss comes near the f64 range), so any thread may raise the flag.
    if (!isfinite(loss)) {
        atomicCAS(stats + STAT_NONFINITE, 0ull, batch + 1);
    }
}

// Factor of every gradient of a batch: the class weight over N, times the f16 loss scale.
__device__ __forceinline__ double gradient_factor(double weight, double inv_n, const u32* scaling) {
    double factor = weight * inv_n;
    if (scaling != 0) {
        factor *= (double)__uint_as_float(scaling[SCALE_VALUE]);
    }
    return factor;
}

// Softmax cross-entropy of logits z[rows, cols] against class indices t[rows].
//
// loss = log(sum(exp(z - max))) + max - z[t], weighted by w[t] when `w` is
// given; grad (when given) = factor * (softmax(z) - onehot(t)).
extern "C" __global__ void softmax_cross_entropy(
    const float* __restrict__ z, const float* __restrict__ t, const float* __restrict__ w,
    u32 rows, u32 cols, double inv_n, u64 batch, float* __restrict__ grad,
    u64* __restrict__ stats, const u32* __restrict__ scaling) {
    __shared__ double shared[BLOCK];
    u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    double loss = 0.0;
    double correct = 0.0;
    u32 target = 0;
    if (r < rows && class_index(t[r], cols, r, stats, &target)) {
        const float* zr = z + (u64)r * cols;
        float max_f = -__int_as_float(0x7F800000);
        u32 argmax = 0;
        for (u32 j = 0; j < cols; ++j) {
            max_f = fmaxf(max_f, zr[j]);
            if (zr[j] > zr[argmax]) {
                argmax = j;
            }
        }
        double max = (double)max_f;
        double sum = 0.0;
        for (u32 j = 0; j < cols; ++j) {
            sum += exp((double)zr[j] - max);
        }
        double weight = w != 0 ? (double)w[target] : 1.0;
        double row_loss = log(sum) + (max - (double)zr[target]);
        loss = weight * row_loss;
        correct = argmax == target ? 1.0 : 0.0;
        if (grad != 0) {
            // The CPU stores exp(z - max) as f32 before dividing; so does this.
            double factor = gradient_factor(weight, inv_n, scaling);
            float* gr = grad + (u64)r * cols;
            for (u32 j = 0; j < cols; ++j) {
                float e = (float)exp((double)zr[j] - max);
                float p = (float)((double)e / sum);
                double onehot = j == target ? 1.0 : 0.0;
                gr[j] = (float)(((double)p - onehot) * factor);
            }
        }
    }
    add_block_stats(stats, loss, correct, 0.0, false, rows, batch, shared);
}

// Binary cross-entropy of one logit per row, in the softplus form
// max(z, 0) - z * t + log(1 + exp(-|z|)); grad = factor * (sigmoid(z) - t).
extern "C" __global__ void sigmoid_cross_entropy(
    const float* __restrict__ z, const float* __restrict__ t, const float* __restrict__ w,
    u32 rows, double inv_n, u64 batch, float* __restrict__ grad, u64* __restrict__ stats,
    const u32* __restrict__ scaling) {
    __shared__ double shared[BLOCK];
    u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    double loss = 0.0;
    double correct = 0.0;
    u32 target = 0;
    if (r < rows && class_index(t[r], 2, r, stats, &target)) {
        double zv = (double)z[r];
        double tv = (double)t[r];
        double weight = w != 0 ? (double)w[target] : 1.0;
        double row_loss = fmax(zv, 0.0) - zv * tv + log1p(exp(-fabs(zv)));
        loss = weight * row_loss;
        // The predicted class is 1 when the probability is above 0.5.
        correct = ((zv > 0.0) == (tv == 1.0)) ? 1.0 : 0.0;
        if (grad != 0) {
            double factor = gradient_factor(weight, inv_n, scaling);
            grad[r] = (float)((stable_sigmoid(zv) - tv) * factor);
        }
    }
    add_block_stats(stats, loss, correct, 0.0, false, rows, batch, shared);
}

// Squared error (z - t)^2 of one output per row; grad = 2 * (z - t) * inv_n (times the loss scale).
extern "C" __global__ void squared_error(
    const float* __restrict__ z, const float* __restrict__ t, u32 rows, double inv_n,
    u64 batch, float* __restrict__ grad, u64* __restrict__ stats,
    const u32* __restrict__ scaling) {
    __shared__ double shared[BLOCK];
    u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    double loss = 0.0;
    double abs_error = 0.0;
    if (r < rows) {
        double diff = (double)z[r] - (double)t[r];
        loss = diff * diff;
        abs_error = fabs(diff);
        if (grad != 0) {
            grad[r] = (float)(2.0 * diff * gradient_factor(1.0, inv_n, scaling));
        }
    }
    add_block_stats(stats, loss, 0.0, abs_error, true, rows, batch, shared);
}

// out[r, :] = softmax(z[r, :]), with the CPU's f32 rounding of exp(z - max).
extern "C" __global__ void predict_softmax(
    const float* __restrict__ z, float* __restrict__ out, u32 rows, u32 cols) {
    u32 r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }
    const float* zr = z + (u64)r * cols;
    float* pr = out + (u64)r * cols;
    float max_f = -__int_as_float(0x7F800000);
    for (u32 j = 0; j < cols; ++j) {
        max_f = fmaxf(max_f, zr[j]);
    }
    double max = (double)max_f;
    double sum = 0.0;
    for (u32 j = 0; j < cols; ++j) {
        double e = exp((double)zr[j] - max);
        pr[j] = (float)e;
        sum += e;
    }
    for (u32 j = 0; j < cols; ++j) {
        pr[j] = (float)((double)pr[j] / sum);
    }
}

// out[i] = sigmoid(z[i]) for i < len.
extern "C" __global__ void predict_sigmoid(const float* __restrict__ z, float* __restrict__ out, u64 len) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        out[i] = (float)stable_sigmoid((double)z[i]);
    }
}
