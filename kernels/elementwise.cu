// Elementwise kernels: bias plus activation, dropout, row gathers, zero
// counts and the half-precision copies of matrix-product operands.
//
// Every kernel computes what the CPU backend computes, in the same order of
// f32 operations; build flags turn off fused multiply-adds so the roundings
// match too.

#include "common.cuh"

// y[r, c] = act(y[r, c] + b[c]) over a row-major [rows, cols] matrix.
extern "C" __global__ void bias_activation_forward(
    float* __restrict__ y, const float* __restrict__ b, u32 rows, u32 cols, int act,
    float slope, float alpha) {
    u64 len = (u64)rows * cols;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        y[i] = activate(act, y[i] + b[i % cols], slope, alpha);
    }
}

// dy[r, c] *= act'(y[r, c]) in place, and db[c] = sum over r of the new dy[r, c].
//
// One thread per column adds the rows in order in f32, which is the CPU
// backend's summation order, so db matches it bit for bit.
// NOTE: with few columns and many rows this runs few threads; a row-split
// reduction would be faster for wide batches but would change the order.
extern "C" __global__ void activation_backward_bias(
    float* __restrict__ dy, const float* __restrict__ y, float* __restrict__ db, u32 rows,
    u32 cols, int act, float slope, float alpha) {
    u32 c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) {
        return;
    }
    float sum = 0.0f;
    for (u32 r = 0; r < rows; ++r) {
        u64 i = (u64)r * cols + c;
        float dz = dy[i] * activation_derivative(act, y[i], slope, alpha);
        dy[i] = dz;
        sum += dz;
    }
    db[c] = sum;
}

// out[e] = keep(e) ? y[e] * scale : 0 for e < len, with keep drawn by the
// counter-based hash from (seed, key, e), `key` being `rng::dropout_key`.
extern "C" __global__ void dropout_forward(
    const float* __restrict__ y, float* __restrict__ out, u64 len, u64 seed, u64 key,
    float rate, float scale) {
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < len;
         e += (u64)gridDim.x * blockDim.x) {
        bool keep = unit_f32(hash3(seed, key, e)) >= rate;
        out[e] = keep ? y[e] * scale : 0.0f;
    }
}

// dy[e] = keep(e) ? dy[e] * scale : 0, with the mask of `dropout_forward`.
extern "C" __global__ void dropout_backward(
    float* __restrict__ dy, u64 len, u64 seed, u64 key, float rate, float scale) {
    for (u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x; e < len;
         e += (u64)gridDim.x * blockDim.x) {
        bool keep = unit_f32(hash3(seed, key, e)) >= rate;
        dy[e] = keep ? dy[e] * scale : 0.0f;
    }
}

// dst[r, :] = src[idx[start + r], :] for r < count. Rows whose index is not
// below src_rows are left unwritten; the host checks indices on upload.
extern "C" __global__ void gather_rows(
    const float* __restrict__ src, float* __restrict__ dst, const u32* __restrict__ idx,
    u64 start, u32 count, u32 cols, u32 src_rows) {
    u64 len = (u64)count * cols;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols;
        u64 c = i - r * cols;
        u32 row = idx[start + r];
        if (row < src_rows) {
            dst[i] = src[(u64)row * cols + c];
        }
    }
}

// counts[c] += number of rows r with y[r, c] == 0.
extern "C" __global__ void count_zeros(
    const float* __restrict__ y, float* __restrict__ counts, u32 rows, u32 cols) {
    u32 c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) {
        return;
    }
    float count = counts[c];
    for (u32 r = 0; r < rows; ++r) {
        if (y[(u64)r * cols + c] == 0.0f) {
            count += 1.0f;
        }
    }
    counts[c] = count;
}

// out[i] = bf16(x[i]) for i < len.
extern "C" __global__ void convert_bf16(const float* __restrict__ x, u16* __restrict__ out, u64 len) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        out[i] = f32_to_bf16(x[i]);
    }
}

// out[i] = f16(x[i]) for i < len. When `scaling` is given, a finite input
// that overflows to an infinity raises its overflow word, so the optimizer
// skips the step and the loss scale shrinks.
extern "C" __global__ void convert_f16(
    const float* __restrict__ x, u16* __restrict__ out, u64 len, u32* __restrict__ scaling) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        float v = x[i];
        u16 h = f32_to_f16(v);
        out[i] = h;
        if (scaling != 0 && f16_is_nonfinite(h) && !(fabsf(v) > 3.4028235e38f) && v == v) {
            scaling[SCALE_OVERFLOW] = 1u;
        }
    }
}
