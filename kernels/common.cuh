// Definitions shared by every kernel file: integer types, the layout of the
// statistics buffer, the counter-based hash, activations, half conversions and
// block reductions.
//
// No CUDA header is included, so NVRTC compiles these files at run time with
// no include path. Half-precision values are raw 16-bit patterns (u16).

#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// Threads per block of every kernel; the reductions below assume it.
#define BLOCK 256

// Words of the statistics buffer (u64 each; the first five hold doubles).
#define STAT_LOSS 0
#define STAT_ROWS 1
#define STAT_CORRECT 2
#define STAT_ABS_ERROR 3
#define STAT_PENALTY 4
// Index + 1 of the first batch whose loss was not finite; 0 when none was.
#define STAT_NONFINITE 5
// Row + 1 of the first target that is not a class index; 0 when none was.
#define STAT_BAD_TARGET_ROW 6
// Bits of that target (a float in the low 32 bits).
#define STAT_BAD_TARGET_VALUE 7
#define STAT_WORDS 8

// Words of the f16 loss-scaling state (u32 each).
#define SCALE_VALUE 0     // the loss scale, as float bits
#define SCALE_GOOD_STEPS 1 // steps since the last overflow or growth
#define SCALE_OVERFLOW 2  // 1 when the current step produced an f16 overflow
#define SCALE_WORDS 4

// Activation codes, in the order of the Rust `Activation` enum.
#define ACT_RELU 0
#define ACT_LEAKY_RELU 1
#define ACT_ELU 2
#define ACT_TANH 3
#define ACT_SIGMOID 4
#define ACT_LINEAR 5

// SplitMix64 finaliser (Steele, Lea, Flood 2014); the same function as `rng::mix64`.
__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// `rng::hash`: 64 random bits from a seed, a stream key and a counter.
__device__ __forceinline__ u64 hash3(u64 seed, u64 key, u64 counter) {
    return mix64(mix64(seed ^ mix64(key)) ^ counter);
}

// `rng::unit_f32`: the top 24 bits as a float in [0, 1). Both factors are
// exact in f32, so the product is the same on every device.
__device__ __forceinline__ float unit_f32(u64 bits) {
    return (float)(bits >> 40) * (1.0f / 16777216.0f);
}

// `Activation::apply`, with `slope` the leaky ReLU slope and `alpha` the ELU alpha.
__device__ __forceinline__ float activate(int act, float z, float slope, float alpha) {
    switch (act) {
    case ACT_RELU:
        return fmaxf(z, 0.0f);
    case ACT_LEAKY_RELU:
        return z > 0.0f ? z : slope * z;
    case ACT_ELU:
        return z > 0.0f ? z : alpha * expm1f(z);
    case ACT_TANH:
        return tanhf(z);
    case ACT_SIGMOID:
        return 1.0f / (1.0f + expf(-z));
    default:
        return z;
    }
}

// `Activation::derivative_from_output`: the derivative at the point whose output is `y`.
__device__ __forceinline__ float activation_derivative(int act, float y, float slope, float alpha) {
    switch (act) {
    case ACT_RELU:
        return y > 0.0f ? 1.0f : 0.0f;
    case ACT_LEAKY_RELU:
        return y > 0.0f ? 1.0f : slope;
    case ACT_ELU:
        return y > 0.0f ? 1.0f : y + alpha;
    case ACT_TANH:
        return 1.0f - y * y;
    case ACT_SIGMOID:
        return y * (1.0f - y);
    default:
        return 1.0f;
    }
}

// f32 to bf16 with round-to-nearest-even; NaN stays a quiet NaN.
__device__ __forceinline__ u16 f32_to_bf16(float x) {
    u32 bits = __float_as_uint(x);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) {
        return (u16)((bits >> 16) | 0x0040u);
    }
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (u16)(bits >> 16);
}

// f32 to f16 with round-to-nearest-even; values beyond the f16 range become infinities.
__device__ __forceinline__ u16 f32_to_f16(float x) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

// Whether an f16 bit pattern is an infinity or NaN.
__device__ __forceinline__ bool f16_is_nonfinite(u16 h) {
    return (h & 0x7C00u) == 0x7C00u;
}

// Sums `value` over the block (BLOCK threads) in a fixed order; thread 0 receives the sum.
__device__ __forceinline__ double block_sum(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (u32 stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            shared[threadIdx.x] += shared[threadIdx.x + stride];
        }
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

// Adds to a double stored in a u64 word of the statistics buffer.
__device__ __forceinline__ void stat_add(u64* stats, int word, double value) {
    atomicAdd((double*)(stats + word), value);
}

// True once an earlier batch raised the non-finite flag, or an f16 step overflowed.
__device__ __forceinline__ bool step_is_skipped(const u64* stats, const u32* scaling) {
    if (*(volatile const u64*)(stats + STAT_NONFINITE) != 0) {
        return true;
    }
    return scaling != 0 && *(volatile const u32*)(scaling + SCALE_OVERFLOW) != 0;
}
