// Device helpers shared by the kernels: dtype-generic vector loads/stores through fp32, launch checks,
// and a deterministic block reduction.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "videomae_kernels.h"

namespace videomae {

// Launch errors surface as std::runtime_error; bindings.cpp turns them into Python RuntimeErrors.
inline void check_launch(const char* what) {
#ifndef VIDEOMAE_EMULATE  // csrc/emu/cuda_emu.h: the CPU emulation used by the CI tests has no CUDA runtime
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
#endif
}

// The block's dynamic shared memory (the launch's third parameter), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
#ifdef VIDEOMAE_EMULATE
  return reinterpret_cast<T*>(emu::block->smem.data());
#else
  extern __shared__ __align__(16) unsigned char smem[];
  return reinterpret_cast<T*>(smem);
#endif
}

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int dtype_size(DType t) { return t == DType::F32 ? 4 : (t == DType::U8 ? 1 : 2); }

// A grid for a grid-stride loop over n items, capped so the index math stays cheap.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = ceil_div(n, threads);
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks > 0 ? blocks : 1) : 65535 * 16);
}

// A 2-D launch over rows x vectors-per-row: x covers one row's vectors (index math per thread done once),
// y strides over the rows. 256 threads per block, at least one warp per row.
struct RowLaunch {
  dim3 grid, block;
};
inline RowLaunch row_launch(int64_t rows, int64_t vecs) {
  const int64_t tx = std::min<int64_t>(256, std::max<int64_t>(1, ceil_div(vecs, 32)) * 32), ty = 256 / tx;
  const int64_t gx = std::max<int64_t>(1, ceil_div(vecs, tx));
  const int64_t gy = std::min<int64_t>(65535, std::max<int64_t>(1, ceil_div(rows, ty)));
  return {dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
          dim3(static_cast<unsigned>(tx), static_cast<unsigned>(ty))};
}

#define VIDEOMAE_FOR_ROWS(row, rows) \
  for (int64_t row = blockIdx.y * (int64_t)blockDim.y + threadIdx.y; row < (rows); row += (int64_t)gridDim.y * blockDim.y)

template <typename T, int V>
struct alignas(sizeof(T) * V) Vec {
  T v[V];
};

// V elements starting at element i of a buffer of `t`, converted to fp32; the caller guarantees that i*size
// and the base pointer are aligned to V*size bytes when V > 1 (then one vector load per 16 bytes).
template <int V>
__device__ __forceinline__ void load_f32(const void* p, DType t, int64_t i, float (&out)[V]) {
  switch (t) {
    case DType::F32: {
      const Vec<float, V> x = reinterpret_cast<const Vec<float, V>*>(static_cast<const float*>(p) + i)[0];
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = x.v[k];
      break;
    }
    case DType::F16: {
      const Vec<__half, V> x = reinterpret_cast<const Vec<__half, V>*>(static_cast<const __half*>(p) + i)[0];
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = __half2float(x.v[k]);
      break;
    }
    case DType::BF16: {
      const Vec<__nv_bfloat16, V> x =
          reinterpret_cast<const Vec<__nv_bfloat16, V>*>(static_cast<const __nv_bfloat16*>(p) + i)[0];
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = __bfloat162float(x.v[k]);
      break;
    }
    case DType::U8: {
      const Vec<uint8_t, V> x = reinterpret_cast<const Vec<uint8_t, V>*>(static_cast<const uint8_t*>(p) + i)[0];
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = static_cast<float>(x.v[k]);
      break;
    }
  }
}

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to T's precision, back in fp32 (a `.to(dtype)` before an add).
template <typename T>
__device__ __forceinline__ float round_to(float x);
template <>
__device__ __forceinline__ float round_to<float>(float x) { return x; }
template <>
__device__ __forceinline__ float round_to<__half>(float x) { return __half2float(__float2half_rn(x)); }
template <>
__device__ __forceinline__ float round_to<__nv_bfloat16>(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

template <typename T, int V>
__device__ __forceinline__ void store_f32(T* p, int64_t i, const float (&x)[V]) {
  Vec<T, V> y;
#pragma unroll
  for (int k = 0; k < V; ++k) y.v[k] = from_f32<T>(x[k]);
  reinterpret_cast<Vec<T, V>*>(p + i)[0] = y;
}

// V floats to shared memory at s (16-byte aligned when V is a multiple of 4: 128-bit stores, no bank conflicts).
template <int V>
__device__ __forceinline__ void store_smem(float* s, const float (&x)[V]) {
  if constexpr (V % 4 == 0) {
#pragma unroll
    for (int q = 0; q < V / 4; ++q)
      reinterpret_cast<float4*>(s)[q] = make_float4(x[4 * q], x[4 * q + 1], x[4 * q + 2], x[4 * q + 3]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) s[k] = x[k];
  }
}

// Runs the statements with T bound to the C++ type of a float dtype.
#define VIDEOMAE_DISPATCH_FLOAT(dtype, T, ...)                                            \
  switch (dtype) {                                                                        \
    case ::videomae::DType::F32: { using T = float; __VA_ARGS__; break; }                 \
    case ::videomae::DType::F16: { using T = __half; __VA_ARGS__; break; }                \
    case ::videomae::DType::BF16: { using T = __nv_bfloat16; __VA_ARGS__; break; }        \
    default: throw std::invalid_argument("videomae: expected a float32/float16/bfloat16 output"); \
  }

inline bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Sum of NV per-thread values over the block, the same tree every run; result valid in every thread.
// Requires blockDim.x to be a multiple of 32 and at most 1024; `smem` holds 32*NV floats.
template <int NV>
__device__ __forceinline__ void block_sum(float (&v)[NV], float* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < NV; ++k)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < NV; ++k) smem[warp * NV + k] = v[k];
  __syncthreads();
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    float s = 0.f;
    for (int w = 0; w < nwarps; ++w) s += smem[w * NV + k];
    v[k] = s;
  }
}

}  // namespace videomae
