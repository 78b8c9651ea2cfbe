// Optimizer updates, one fused kernel per optimizer, plus the global-norm
// clipping factor and the f16 loss-scale update.
//
// Each update follows the CPU backend's `update_chunk` operation by
// operation, in f32 and without fused multiply-adds, so a step gives the
// same weights bit for bit. Every update does nothing once the statistics
// carry the non-finite flag or the f16 step overflowed.

#include "common.cuh"

// Scalars every update shares (the CPU's `StepScalars`).
struct StepArgs {
    float lr;
    // `2 * l2`, the factor of w in the L2 gradient.
    float l2_grad;
    // `lr * weight_decay`, the decoupled decay of this step.
    float decay;
    // The L2 factor whose penalty `l2 * sum(w^2)` goes into the statistics; 0 for none.
    float l2;
};

// The effective gradient (scaled, plus the L2 term at the weight before the
// step) and the weight after decoupled decay (the CPU's `prepare`).
__device__ __forceinline__ float prepare(
    const StepArgs& s, float w, float g, float grad_scale, float* decayed) {
    *decayed = w - s.decay * w;
    return g * grad_scale + s.l2_grad * w;
}

// The gradient factor of this step: clipping times the inverse f16 loss scale.
__device__ __forceinline__ float gradient_scale(const float* clip, const u32* scaling) {
    float scale = clip != 0 ? *clip : 1.0f;
    if (scaling != 0) {
        // The loss scale is a power of two, so its inverse is exact.
        scale = scale * (1.0f / __uint_as_float(scaling[SCALE_VALUE]));
    }
    return scale;
}

// Adds `l2 * sum(w^2)` of this block's weights (before the update) to the statistics.
__device__ __forceinline__ void add_penalty(u64* stats, float l2, double sum_sq, double* shared) {
    double total = block_sum(sum_sq, shared);
    if (threadIdx.x == 0) {
        stat_add(stats, STAT_PENALTY, (double)l2 * total);
    }
}

#define UPDATE_PROLOGUE                                                        \
    __shared__ double shared[BLOCK];                                           \
    if (step_is_skipped(stats, scaling)) {                                     \
        return;                                                                \
    }                                                                          \
    float grad_scale = gradient_scale(clip, scaling);                          \
    double sum_sq = 0.0;                                                       \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;          \
         i += (u64)gridDim.x * blockDim.x) {                                   \
        float wv = w[i];                                                       \
        if (s.l2 != 0.0f) {                                                    \
            sum_sq += (double)wv * (double)wv;                                 \
        }                                                                      \
        float wd;                                                              \
        float gv = prepare(s, wv, g[i], grad_scale, &wd);

#define UPDATE_EPILOGUE                                                        \
    }                                                                          \
    if (s.l2 != 0.0f) {                                                        \
        add_penalty(stats, s.l2, sum_sq, shared);                              \
    }

// SGD without momentum: w = decayed - lr * g.
extern "C" __global__ void sgd_update(
    float* __restrict__ w, const float* __restrict__ g, u64 len, StepArgs s,
    const float* __restrict__ clip, u64* __restrict__ stats, const u32* __restrict__ scaling) {
    UPDATE_PROLOGUE
        w[i] = wd - s.lr * gv;
    UPDATE_EPILOGUE
}

// SGD with momentum: v = momentum * v - lr * g, then w = decayed + v, or with
// Nesterov w = decayed + momentum * v - lr * g.
extern "C" __global__ void sgd_momentum_update(
    float* __restrict__ w, const float* __restrict__ g, u64 len, StepArgs s,
    const float* __restrict__ clip, u64* __restrict__ stats, const u32* __restrict__ scaling,
    float* __restrict__ v, float momentum, int nesterov) {
    UPDATE_PROLOGUE
        float vv = momentum * v[i] - s.lr * gv;
        v[i] = vv;
        w[i] = nesterov ? wd + momentum * vv - s.lr * gv : wd + vv;
    UPDATE_EPILOGUE
}

// Adam (and AdamW, whose decay is in `s.decay`):
// m = b1 * m + (1 - b1) * g, v = b2 * v + (1 - b2) * g^2,
// w = decayed - step_size * m / (sqrt(v) * denom_scale + eps).
extern "C" __global__ void adam_update(
    float* __restrict__ w, const float* __restrict__ g, u64 len, StepArgs s,
    const float* __restrict__ clip, u64* __restrict__ stats, const u32* __restrict__ scaling,
    float* __restrict__ m, float* __restrict__ v, float beta1, float beta2, float epsilon,
    float step_size, float denom_scale) {
    UPDATE_PROLOGUE
        float mv = beta1 * m[i] + (1.0f - beta1) * gv;
        float vv = beta2 * v[i] + (1.0f - beta2) * gv * gv;
        m[i] = mv;
        v[i] = vv;
        w[i] = wd - step_size * mv / (sqrtf(vv) * denom_scale + epsilon);
    UPDATE_EPILOGUE
}

// RMSprop: v = rho * v + (1 - rho) * g^2, w = decayed - lr * g / sqrt(v + eps).
extern "C" __global__ void rmsprop_update(
    float* __restrict__ w, const float* __restrict__ g, u64 len, StepArgs s,
    const float* __restrict__ clip, u64* __restrict__ stats, const u32* __restrict__ scaling,
    float* __restrict__ v, float rho, float epsilon) {
    UPDATE_PROLOGUE
        float vv = rho * v[i] + (1.0f - rho) * gv * gv;
        v[i] = vv;
        w[i] = wd - s.lr * gv / sqrtf(vv + epsilon);
    UPDATE_EPILOGUE
}

// RMSprop with momentum: mom = momentum * mom + lr * g / sqrt(v + eps), w = decayed - mom.
extern "C" __global__ void rmsprop_momentum_update(
    float* __restrict__ w, const float* __restrict__ g, u64 len, StepArgs s,
    const float* __restrict__ clip, u64* __restrict__ stats, const u32* __restrict__ scaling,
    float* __restrict__ v, float* __restrict__ mom, float rho, float epsilon, float momentum) {
    UPDATE_PROLOGUE
        float vv = rho * v[i] + (1.0f - rho) * gv * gv;
        v[i] = vv;
        float mm = momentum * mom[i] + s.lr * gv / sqrtf(vv + epsilon);
        mom[i] = mm;
        w[i] = wd - mm;
    UPDATE_EPILOGUE
}

// acc[0] += sum(x^2) over x[len], in f64.
extern "C" __global__ void sum_squares(const float* __restrict__ x, u64 len, double* __restrict__ acc) {
    __shared__ double shared[BLOCK];
    double sum = 0.0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (u64)gridDim.x * blockDim.x) {
        sum += (double)x[i] * (double)x[i];
    }
    double total = block_sum(sum, shared);
    if (threadIdx.x == 0) {
        atomicAdd(acc, total);
    }
}

// scale[0] = min(1, max_norm / (norm + 1e-6)) with norm = sqrt(acc[0]); with
// f16 loss scaling the gradients carry the scale, so the norm is divided by it.
extern "C" __global__ void clip_finalize(
    const double* __restrict__ acc, float max_norm, float* __restrict__ scale,
    const u32* __restrict__ scaling) {
    if (blockIdx.x != 0 || threadIdx.x != 0) {
        return;
    }
    double norm = sqrt(acc[0]);
    if (scaling != 0) {
        norm = norm / (double)__uint_as_float(scaling[SCALE_VALUE]);
    }
    scale[0] = (float)fmin((double)max_norm / (norm + 1e-6), 1.0);
}

// Dynamic f16 loss scaling, run once before each training step's loss: after
// an overflow the scale halves (not below 1) and the count restarts; after
// `growth_interval` steps without one it doubles (not above 2^24).
extern "C" __global__ void loss_scale_update(u32* __restrict__ scaling, u32 growth_interval) {
    if (blockIdx.x != 0 || threadIdx.x != 0) {
        return;
    }
    float scale = __uint_as_float(scaling[SCALE_VALUE]);
    if (scaling[SCALE_OVERFLOW] != 0) {
        scale = fmaxf(scale * 0.5f, 1.0f);
        scaling[SCALE_GOOD_STEPS] = 0;
        scaling[SCALE_OVERFLOW] = 0;
    } else {
        u32 good = scaling[SCALE_GOOD_STEPS] + 1;
        if (good >= growth_interval) {
            scale = fminf(scale * 2.0f, 16777216.0f);
            good = 0;
        }
        scaling[SCALE_GOOD_STEPS] = good;
    }
    scaling[SCALE_VALUE] = __float_as_uint(scale);
}
