// cube_embed: gather the visible cubes into a [B*N_vis, C*t*p*p] patch matrix (the matmul itself runs in
// cuBLAS through torch, in bindings.cpp), add the positional embedding, and scatter patch grads back to videos.
// Each thread moves V pixels of one cube row (p contiguous pixels in both layouts): 16-byte accesses when
// the row, the clip width and the pointers allow, a scalar path otherwise.
#include "common.cuh"

namespace videomae {

namespace {

// Largest V in {8, 4, 1} that keeps every access of `sizes` bytes-per-element within 16 bytes and aligned.
int pick_vec(std::initializer_list<int> sizes, std::initializer_list<const void*> ptrs,
             std::initializer_list<int64_t> extents) {
  int max_size = 1;
  for (int s : sizes) max_size = s > max_size ? s : max_size;
  for (int v : {8, 4}) {
    if (v * max_size > 16) continue;
    bool ok = true;
    for (int64_t e : extents) ok = ok && e % v == 0;
    auto size_it = sizes.begin();
    for (const void* p : ptrs) ok = ok && aligned(p, v * *(size_it++));
    if (ok) return v;
  }
  return 1;
}

// Rows m = b*n_sel + r of the patch matrix; thread j owns values [j*V, j*V + V) of every row it visits.
// An id outside [0, N) reads nothing and gets a row of zeros.
template <typename To, int V>
__global__ void gather_kernel(const void* __restrict__ videos, DType v_dtype, CubeGeom g, const int64_t* __restrict__ ids,
                              int64_t n_sel, int64_t rows, ChannelAffine affine, To* __restrict__ patches) {
  const int K = static_cast<int>(g.cube()), j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= K / V) return;
  const int p = static_cast<int>(g.p), t = static_cast<int>(g.t), k0 = j * V;
  const int dx = k0 % p, dy = (k0 / p) % p, dt = (k0 / (p * p)) % t, c = k0 / (p * p * t);
  const int64_t HW = g.H * g.W, THW = g.T * HW;
  const int64_t inner = c * THW + dt * HW + dy * g.W + dx;  // this pixel row, relative to the cube's corner
  const int Hp = static_cast<int>(g.Hp()), Wp = static_cast<int>(g.Wp()), N = Hp * Wp * static_cast<int>(g.Tp());
  float scale = 1.f, shift = 0.f;  // picked by an unrolled compare: an indexed param array would go to local memory
#pragma unroll
  for (int q = 0; q < 4; ++q)
    if (q == c) scale = affine.scale[q], shift = affine.shift[q];
  VIDEOMAE_FOR_ROWS(m, rows) {
    const int64_t id = ids[m];
    float x[V];
    if (id < 0 || id >= N) {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = 0.f;
      store_f32<To, V>(patches, m * K + k0, x);
      continue;
    }
    const int n = static_cast<int>(id);
    const int64_t b = m / n_sel;
    const int it = n / (Hp * Wp), ih = (n / Wp) % Hp, iw = n % Wp;
    const int64_t src = b * g.C * THW + inner + it * t * HW + static_cast<int64_t>(ih) * p * g.W + iw * p;
    load_f32<V>(videos, v_dtype, src, x);
    if (affine.on) {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = x[k] * scale + shift;
    }
    store_f32<To, V>(patches, m * K + k0, x);
  }
}

// Video rows (b, c, tt, y) of W pixels; thread j owns pixels [j*V, j*V + V) of every row it visits. Patch grads
// (p_dtype, the weight's) are converted in registers to the clip's dtype.
template <typename To, int V>
__global__ void scatter_kernel(const void* __restrict__ grad_patches, DType p_dtype, CubeGeom g,
                               const int32_t* __restrict__ inv, int64_t n_sel, To* __restrict__ grad_videos) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= g.W / V) return;
  const int p = static_cast<int>(g.p), t = static_cast<int>(g.t), x0 = j * V, iw = x0 / p, dx = x0 % p;
  const int64_t K = g.cube(), N = g.tokens(), rows = g.B * g.C * g.T * g.H;
  VIDEOMAE_FOR_ROWS(row, rows) {
    const int y = static_cast<int>(row % g.H), tt = static_cast<int>((row / g.H) % g.T);
    const int c = static_cast<int>((row / (g.H * g.T)) % g.C);
    const int64_t b = row / (g.H * g.T * g.C);
    const int64_t n = ((tt / t) * g.Hp() + y / p) * g.Wp() + iw;
    const int32_t r = inv[b * N + n];
    float out[V];
    if (r >= 0 && r < n_sel) {
      const int k = ((c * t + tt % t) * p + y % p) * p + dx;
      load_f32<V>(grad_patches, p_dtype, (b * n_sel + r) * K + k, out);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = 0.f;
    }
    store_f32<To, V>(grad_videos, row * g.W + x0, out);
  }
}

// In place (out == y) in the forward: each element is read, then written, by one thread, so no __restrict__.
// An id outside [0, N) adds no pos.
template <typename To, int V>
__global__ void add_pos_kernel(const void* y, DType y_dtype, const void* __restrict__ pos, DType pos_dtype,
                               const int64_t* __restrict__ ids, int64_t N, int64_t rows, int64_t D, To* out) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= D / V) return;
  const int64_t d = j * V;
  VIDEOMAE_FOR_ROWS(m, rows) {
    float a[V], p[V];
    load_f32<V>(y, y_dtype, m * D + d, a);
    const int64_t n = ids[m];
    if (n >= 0 && n < N) {
      load_f32<V>(pos, pos_dtype, n * D + d, p);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) p[k] = 0.f;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] += round_to<To>(p[k]);  // pos.to(out dtype), then one rounded add
    store_f32<To, V>(out, m * D + d, a);
  }
}

}  // namespace

void cube_embed_gather(const void* videos, DType v_dtype, const CubeGeom& g, const int64_t* ids, int64_t n_sel,
                       const ChannelAffine& affine, void* patches, DType p_dtype, cudaStream_t stream) {
  const int64_t rows = g.B * n_sel;
  if (rows == 0) return;
  const int V = pick_vec({dtype_size(v_dtype), dtype_size(p_dtype)}, {videos, patches}, {g.p, g.W});
  const RowLaunch l = row_launch(rows, g.cube() / V);
  VIDEOMAE_DISPATCH_FLOAT(p_dtype, To, {
    To* out = static_cast<To*>(patches);
    if (V == 8)
      gather_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, n_sel, rows, affine, out);
    else if (V == 4)
      gather_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, n_sel, rows, affine, out);
    else
      gather_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, n_sel, rows, affine, out);
  });
  check_launch("cube_embed_gather");
}

void cube_embed_scatter(const void* grad_patches, DType p_dtype, const CubeGeom& g, const int32_t* inv, int64_t n_sel,
                        void* grad_videos, DType v_dtype, cudaStream_t stream) {
  const int64_t numel = g.B * g.C * g.T * g.H * g.W;
  if (numel == 0) return;
  const int V = pick_vec({dtype_size(p_dtype), dtype_size(v_dtype)}, {grad_patches, grad_videos}, {g.p, g.W});
  const RowLaunch l = row_launch(g.B * g.C * g.T * g.H, g.W / V);
  VIDEOMAE_DISPATCH_FLOAT(v_dtype, To, {
    To* gv = static_cast<To*>(grad_videos);
    if (V == 8)
      scatter_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(grad_patches, p_dtype, g, inv, n_sel, gv);
    else if (V == 4)
      scatter_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(grad_patches, p_dtype, g, inv, n_sel, gv);
    else
      scatter_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(grad_patches, p_dtype, g, inv, n_sel, gv);
  });
  check_launch("cube_embed_scatter");
}

void cube_embed_add_pos(const void* y, DType y_dtype, const void* pos, DType pos_dtype, const int64_t* ids, int64_t N,
                        int64_t rows, int64_t D, void* out, DType out_dtype, cudaStream_t stream) {
  if (rows * D == 0) return;
  const int V = pick_vec({dtype_size(y_dtype), dtype_size(pos_dtype), dtype_size(out_dtype)}, {y, pos, out}, {D});
  const RowLaunch l = row_launch(rows, D / V);
  VIDEOMAE_DISPATCH_FLOAT(out_dtype, To, {
    To* o = static_cast<To*>(out);
    if (V == 8)
      add_pos_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, N, rows, D, o);
    else if (V == 4)
      add_pos_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, N, rows, D, o);
    else
      add_pos_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, N, rows, D, o);
  });
  check_launch("cube_embed_add_pos");
}

}  // namespace videomae
