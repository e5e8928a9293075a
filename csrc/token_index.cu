// Token-id tables -> their inverse maps (token -> row), and the deterministic reductions the backward passes share
// (positional-embedding grads, bias / mask-token grads). Fixed summation orders, no atomics.
#include "common.cuh"

namespace videomae {

namespace {

constexpr int kInvThreads = 256;

// One block per batch row (grid-striding over rows): fill the row with -1, then write each listed token's rank.
// Ids outside [0, N) are skipped; duplicate ids (masking.token_ids makes none) would race but stay in bounds.
__global__ void inverse_index_kernel(const int64_t* __restrict__ ids, int64_t B, int64_t N, int64_t n_sel,
                                     int32_t* __restrict__ inv) {
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    int32_t* row = inv + b * N;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) row[n] = -1;
    __syncthreads();  // every -1 lands before any rank (a thread's fill may cover another thread's token)
    for (int64_t r = threadIdx.x; r < n_sel; r += blockDim.x) {
      const int64_t n = ids[b * n_sel + r];
      if (n >= 0 && n < N) row[n] = static_cast<int32_t>(r);
    }
  }
}

// A row index outside [0, rows) (none from inverse_index) reads nothing.
__global__ void scatter_rows_sum_kernel(const void* __restrict__ g, DType g_dtype, int64_t g_batch_stride,
                                        int64_t rows, const int32_t* __restrict__ inv, int64_t B, int64_t N,
                                        int64_t D, bool accumulate, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < N * D; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = i / D, d = i - n * D;
    float s = accumulate ? out[i] : 0.f;
    for (int64_t b = 0; b < B; ++b) {  // batch order fixed: deterministic
      const int32_t r = inv[b * N + n];
      if (r >= 0 && r < rows) {
        float v[1];
        load_f32<1>(g, g_dtype, b * g_batch_stride + r * D + d, v);
        s += v[0];
      }
    }
    out[i] = s;
  }
}

constexpr int kColX = 32, kColY = 8, kRowsPerThread = 16;

int64_t col_chunks(int64_t rows) {
  const int64_t c = ceil_div(rows, kColY * kRowsPerThread);
  return c < 1 ? 1 : (c > 1024 ? 1024 : c);
}

// Stage 1: block (32 columns x 8 row lanes) sums one chunk of rows; lanes combined in a fixed order.
__global__ void col_sum_partial_kernel(const void* __restrict__ g, DType g_dtype, int64_t rows,
                                       int64_t rows_per_batch, int64_t batch_stride, int64_t D,
                                       float* __restrict__ partial) {
  __shared__ float lanes[kColY][kColX];
  const int64_t d = blockIdx.x * (int64_t)kColX + threadIdx.x;
  const int64_t per_chunk = ceil_div(rows, gridDim.y);
  const int64_t lo = blockIdx.y * per_chunk, hi = min(rows, lo + per_chunk);
  float s = 0.f;
  if (d < D) {
    for (int64_t r = lo + threadIdx.y; r < hi; r += kColY) {
      const int64_t b = r / rows_per_batch, j = r - b * rows_per_batch;
      float v[1];
      load_f32<1>(g, g_dtype, b * batch_stride + j * D + d, v);
      s += v[0];
    }
  }
  lanes[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    float t = 0.f;
    for (int y = 0; y < kColY; ++y) t += lanes[y][threadIdx.x];
    partial[blockIdx.y * D + d] = t;
  }
}

__global__ void col_sum_final_kernel(const float* __restrict__ partial, int64_t chunks, int64_t D,
                                     float* __restrict__ out) {
  const int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (d >= D) return;
  float s = 0.f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * D + d];
  out[d] = s;
}

}  // namespace

void inverse_index(const int64_t* ids, int64_t B, int64_t N, int64_t n_sel, int32_t* inv, cudaStream_t stream) {
  if (B * N == 0) return;
  const unsigned blocks = static_cast<unsigned>(B < 65535 ? B : 65535);
  inverse_index_kernel<<<blocks, kInvThreads, 0, stream>>>(ids, B, N, n_sel, inv);
  check_launch("inverse_index");
}

void scatter_rows_sum(const void* g, DType g_dtype, int64_t g_batch_stride, int64_t rows, const int32_t* inv,
                      int64_t B, int64_t N, int64_t D, bool accumulate, float* out, cudaStream_t stream) {
  if (N * D == 0) return;
  scatter_rows_sum_kernel<<<grid_for(N * D, 256), 256, 0, stream>>>(g, g_dtype, g_batch_stride, rows, inv, B, N, D,
                                                                     accumulate, out);
  check_launch("scatter_rows_sum");
}

int64_t col_sum_partial_size(int64_t rows, int64_t D) { return col_chunks(rows) * D; }

void col_sum(const void* g, DType g_dtype, int64_t rows, int64_t rows_per_batch, int64_t batch_stride, int64_t D,
             float* partial, float* out, cudaStream_t stream) {
  if (D == 0) return;
  const int64_t chunks = col_chunks(rows);
  if (rows > 0) {
    dim3 grid(static_cast<unsigned>(ceil_div(D, kColX)), static_cast<unsigned>(chunks));
    col_sum_partial_kernel<<<grid, dim3(kColX, kColY), 0, stream>>>(g, g_dtype, rows, rows_per_batch > 0 ? rows_per_batch : 1,
                                                                   batch_stride, D, partial);
    check_launch("col_sum_partial");
  }
  col_sum_final_kernel<<<static_cast<unsigned>(ceil_div(D, 256)), 256, 0, stream>>>(partial, rows > 0 ? chunks : 0,
                                                                                  D, out);
  check_launch("col_sum_final");
}

}  // namespace videomae
