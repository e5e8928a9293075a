// norm_pix_mse: videomae.loss.pixel_loss without materializing the target. One block per decoded cube stages
// the cube's pixels in shared memory (fp32, in the clip's (c, dt, dy, dx) order), computes the normalization
// statistics with a fixed-order block reduction, then compares with pred. Per-cube error sums go to a buffer
// that one block reduces in a fixed order: the loss is bitwise reproducible, no atomics.
#include "common.cuh"

namespace videomae {

namespace {

constexpr int kReduceThreads = 1024;

// Stages cube `cube_row` (= b*n_dec + j) in sx as its regression target, in the clip's (c, dt, dy, dx) order (so
// each thread writes V consecutive floats and a channel is one contiguous range, free of bank conflicts):
// pixels unnormalized or not per style, then normalized in place when asked. Channel loops run to 4 with `c < C`
// so the per-channel sums stay in registers.
template <int V>
__device__ void load_target(const NormPixMseArgs& a, int64_t cube_row, float* sx, float* red) {
  const CubeGeom& g = a.g;
  const int C = static_cast<int>(g.C), t = static_cast<int>(g.t), p = static_cast<int>(g.p);
  const int P = t * p * p, PC = P * C, per_row = p / V;
  const int Hp = static_cast<int>(g.Hp()), Wp = static_cast<int>(g.Wp());
  const int64_t b = cube_row / a.n_dec, id = a.ids[cube_row];
  // An id outside [0, N) stages zeros and reads nothing (cube_weight gives it weight 0).
  const bool valid = id >= 0 && id < g.tokens();
  const int n = valid ? static_cast<int>(id) : 0, it = n / (Hp * Wp), ih = (n / Wp) % Hp, iw = n % Wp;
  const int64_t HW = g.H * g.W, THW = g.T * HW;
  const int64_t corner = b * g.C * THW + static_cast<int64_t>(it) * t * HW + static_cast<int64_t>(ih) * p * g.W + iw * p;
  for (int i = threadIdx.x; i < PC / V; i += blockDim.x) {  // i*V = ((c*t + dt)*p + dy)*p + dx
    const int dx = (i % per_row) * V, dy = (i / per_row) % p, dt = (i / (per_row * p)) % t, c = i / (per_row * p * t);
    float x[V];
    if (valid) {
      load_f32<V>(a.videos, a.v_dtype, corner + c * THW + dt * HW + static_cast<int64_t>(dy) * g.W + dx, x);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = 0.f;
    }
    if (a.unnorm.on) {
      float scale = 0.f, shift = 0.f;  // unrolled pick: an indexed param array would go to local memory
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (q == c) scale = a.unnorm.scale[q], shift = a.unnorm.shift[q];
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = __fadd_rn(__fmul_rn(x[k], scale), shift);  // x*std + mean, no FMA: as eager
    }
    store_smem<V>(sx + i * V, x);
  }
  __syncthreads();
  if (!a.normalize) return;
  // Two passes (mean, then squared deviations) like torch.var: no cancellation on bright cubes.
  float s[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int c = 0; c < 4; ++c)
    if (c < C)
      for (int i = threadIdx.x; i < P; i += blockDim.x) s[c] += sx[c * P + i];
  block_sum<4>(s, red);
  float mu[4], den[4], q[4] = {0.f, 0.f, 0.f, 0.f};
  if (a.mae_st) {  // joint over all values, eps inside the sqrt
    const float m = (s[0] + s[1] + s[2] + s[3]) / static_cast<float>(PC);
    for (int i = threadIdx.x; i < PC; i += blockDim.x) q[0] += (sx[i] - m) * (sx[i] - m);
    block_sum<4>(q, red);
    const float d = sqrtf(q[0] / static_cast<float>(PC - 1) + 1e-6f);
#pragma unroll
    for (int c = 0; c < 4; ++c) mu[c] = m, den[c] = d;
  } else {  // per channel, eps outside the sqrt
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      mu[c] = s[c] / static_cast<float>(P);
      if (c < C)
        for (int i = threadIdx.x; i < P; i += blockDim.x) q[c] += (sx[c * P + i] - mu[c]) * (sx[c * P + i] - mu[c]);
    }
    block_sum<4>(q, red);
#pragma unroll
    for (int c = 0; c < 4; ++c) den[c] = sqrtf(q[c] / static_cast<float>(P - 1)) + 1e-6f;
  }
#pragma unroll
  for (int c = 0; c < 4; ++c)
    if (c < C)
      for (int i = threadIdx.x; i < P; i += blockDim.x) sx[c * P + i] = (sx[c * P + i] - mu[c]) / den[c];
  __syncthreads();
}

// Targets of pred values [k, k + V) (pred order: pixel-major, channel fastest) from sx's channel-major layout.
template <int V>
__device__ __forceinline__ void targets(const float* sx, int k, int C, int P, float (&y)[V]) {
  int c = k % C, pix = k / C;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    y[j] = sx[c * P + pix];
    if (++c == C) c = 0, ++pix;
  }
}

// 1 for a scored cube (all of them in V1), 0 otherwise and for an id outside [0, N).
__device__ __forceinline__ float cube_weight(const NormPixMseArgs& a, int64_t cube_row) {
  const int64_t id = a.ids[cube_row];
  if (id < 0 || id >= a.g.tokens()) return 0.f;
  return !a.scored || a.scored[cube_row] ? 1.f : 0.f;
}

template <int V>
__global__ void fwd_kernel(NormPixMseArgs a, float* __restrict__ partial) {
  float* sx = dynamic_smem<float>();
  __shared__ float red[32 * 4];
  const int64_t cube_row = blockIdx.x;
  const int PC = static_cast<int>(a.g.cube());
  load_target<V>(a, cube_row, sx, red);
  const int C = static_cast<int>(a.g.C), P = PC / C;
  float e[1] = {0.f};
  for (int k = threadIdx.x * V; k < PC; k += blockDim.x * V) {
    float p[V], y[V];
    load_f32<V>(a.pred, a.pred_dtype, cube_row * PC + k, p);
    targets<V>(sx, k, C, P, y);
#pragma unroll
    for (int j = 0; j < V; ++j) e[0] += (p[j] - y[j]) * (p[j] - y[j]);
  }
  block_sum<1>(e, red);
  if (threadIdx.x == 0) partial[cube_row] = e[0] * cube_weight(a, cube_row);
}

// One block: S = sum partial (if given), W = sum of weights, both in a fixed order.
// Forward: out = S / (cube * W). Backward: out = 2 * grad_loss / (cube * W).
__global__ void reduce_kernel(NormPixMseArgs a, const float* __restrict__ partial, const float* __restrict__ grad_loss,
                              float* __restrict__ out) {
  __shared__ float red[32 * 4];
  const int64_t cubes = a.g.B * a.n_dec;
  float v[2] = {0.f, 0.f};
  for (int64_t i = threadIdx.x; i < cubes; i += blockDim.x) {
    if (partial) v[0] += partial[i];
    v[1] += cube_weight(a, i);
  }
  block_sum<2>(v, red);
  if (threadIdx.x == 0) {
    const float denom = static_cast<float>(a.g.cube()) * v[1];
    out[0] = grad_loss ? 2.f * grad_loss[0] / denom : v[0] / denom;
  }
}

template <typename T, int V>
__global__ void bwd_kernel(NormPixMseArgs a, const float* __restrict__ coef, T* __restrict__ grad_pred) {
  float* sx = dynamic_smem<float>();
  __shared__ float red[32 * 4];
  const int64_t cube_row = blockIdx.x;
  const int PC = static_cast<int>(a.g.cube());
  load_target<V>(a, cube_row, sx, red);
  const int C = static_cast<int>(a.g.C), P = PC / C;
  const float scale = coef[0] * cube_weight(a, cube_row);
  for (int k = threadIdx.x * V; k < PC; k += blockDim.x * V) {
    float p[V], y[V];
    load_f32<V>(a.pred, a.pred_dtype, cube_row * PC + k, p);
    targets<V>(sx, k, C, P, y);
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = scale * (p[j] - y[j]);
    store_f32<T, V>(grad_pred, cube_row * PC + k, p);
  }
}

int pick_vec(const NormPixMseArgs& a) {
  const int size = dtype_size(a.v_dtype) > dtype_size(a.pred_dtype) ? dtype_size(a.v_dtype) : dtype_size(a.pred_dtype);
  for (int v : {8, 4})
    if (v * size <= 16 && a.g.p % v == 0 && a.g.W % v == 0 && a.g.cube() % v == 0 &&
        aligned(a.videos, v * dtype_size(a.v_dtype)) && aligned(a.pred, v * dtype_size(a.pred_dtype)))
      return v;
  return 1;
}

// Cubes above 48 KiB of fp32 need the opt-in shared-memory limit.
template <typename K>
void allow_smem(K kernel, size_t bytes) {
#ifndef VIDEOMAE_EMULATE
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
#endif
}

// One thread per vector of the cube (bf16 ViT-B: 1536 / 8 = 192), 64 to 256 per block.
int cube_threads(const NormPixMseArgs& a, int V) {
  const int64_t t = ceil_div(a.g.cube() / V, 32) * 32;
  return static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(64, t)));
}

template <int V>
void launch_fwd(const NormPixMseArgs& a, float* partial, cudaStream_t stream) {
  const size_t smem = a.g.cube() * sizeof(float);
  allow_smem(fwd_kernel<V>, smem);
  fwd_kernel<V><<<static_cast<unsigned>(a.g.B * a.n_dec), cube_threads(a, V), smem, stream>>>(a, partial);
}

template <typename T, int V>
void launch_bwd(const NormPixMseArgs& a, const float* coef, void* grad_pred, cudaStream_t stream) {
  const size_t smem = a.g.cube() * sizeof(float);
  allow_smem(bwd_kernel<T, V>, smem);
  bwd_kernel<T, V><<<static_cast<unsigned>(a.g.B * a.n_dec), cube_threads(a, V), smem, stream>>>(
      a, coef, static_cast<T*>(grad_pred));
}

}  // namespace

void norm_pix_mse_fwd(const NormPixMseArgs& a, float* partial, float* loss, cudaStream_t stream) {
  if (a.g.B * a.n_dec > 0) {
    const int V = pick_vec(a);
    if (V == 8) launch_fwd<8>(a, partial, stream);
    else if (V == 4) launch_fwd<4>(a, partial, stream);
    else launch_fwd<1>(a, partial, stream);
    check_launch("norm_pix_mse_fwd");
  }
  reduce_kernel<<<1, kReduceThreads, 0, stream>>>(a, partial, nullptr, loss);
  check_launch("norm_pix_mse_reduce");
}

void norm_pix_mse_bwd(const NormPixMseArgs& a, const float* grad_loss, float* scratch, void* grad_pred,
                      cudaStream_t stream) {
  if (a.g.B * a.n_dec == 0) return;
  reduce_kernel<<<1, kReduceThreads, 0, stream>>>(a, nullptr, grad_loss, scratch);
  check_launch("norm_pix_mse_scale");
  const int V = pick_vec(a);
  VIDEOMAE_DISPATCH_FLOAT(a.pred_dtype, T, {
    if (V == 8) launch_bwd<T, 8>(a, scratch, grad_pred, stream);
    else if (V == 4) launch_bwd<T, 4>(a, scratch, grad_pred, stream);
    else launch_bwd<T, 1>(a, scratch, grad_pred, stream);
  });
  check_launch("norm_pix_mse_bwd");
}

}  // namespace videomae
