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
template <typename To, int V>
__global__ void gather_kernel(const void* __restrict__ videos, DType v_dtype, CubeGeom g, const int32_t* __restrict__ ids,
                              int n_sel, int64_t rows, ChannelAffine affine, To* __restrict__ patches) {
  const int K = static_cast<int>(g.cube()), j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= K / V) return;
  const int p = static_cast<int>(g.p), t = static_cast<int>(g.t), k0 = j * V;
  const int dx = k0 % p, dy = (k0 / p) % p, dt = (k0 / (p * p)) % t, c = k0 / (p * p * t);
  const int64_t HW = g.H * g.W, THW = g.T * HW;
  const int64_t inner = c * THW + dt * HW + dy * g.W + dx;  // this pixel row, relative to the cube's corner
  const int Hp = static_cast<int>(g.Hp()), Wp = static_cast<int>(g.Wp());
  float scale = 1.f, shift = 0.f;  // picked by an unrolled compare: an indexed param array would go to local memory
#pragma unroll
  for (int q = 0; q < 4; ++q)
    if (q == c) scale = affine.scale[q], shift = affine.shift[q];
  VIDEOMAE_FOR_ROWS(m, rows) {
    const int n = ids[m];
    const int64_t b = m / n_sel;
    const int it = n / (Hp * Wp), ih = (n / Wp) % Hp, iw = n % Wp;
    const int64_t src = b * g.C * THW + inner + it * t * HW + static_cast<int64_t>(ih) * p * g.W + iw * p;
    float x[V];
    load_f32<V>(videos, v_dtype, src, x);
    if (affine.on) {
#pragma unroll
      for (int k = 0; k < V; ++k) x[k] = x[k] * scale + shift;
    }
    store_f32<To, V>(patches, m * K + k0, x);
  }
}

// Video rows (b, c, tt, y) of W pixels; thread j owns pixels [j*V, j*V + V) of every row it visits.
template <typename T, int V>
__global__ void scatter_kernel(const T* __restrict__ grad_patches, CubeGeom g, const int32_t* __restrict__ inv,
                               int64_t n_sel, T* __restrict__ grad_videos) {
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
    Vec<T, V> out;
    if (r >= 0) {
      const int k = ((c * t + tt % t) * p + y % p) * p + dx;
      out = reinterpret_cast<const Vec<T, V>*>(grad_patches + (b * n_sel + r) * K + k)[0];
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) out.v[k] = from_f32<T>(0.f);
    }
    reinterpret_cast<Vec<T, V>*>(grad_videos + row * g.W + x0)[0] = out;
  }
}

// In place (out == y) in the forward: each element is read, then written, by one thread, so no __restrict__.
template <typename To, int V>
__global__ void add_pos_kernel(const void* y, DType y_dtype, const void* __restrict__ pos, DType pos_dtype,
                               const int32_t* __restrict__ ids, int64_t rows, int64_t D, To* out) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= D / V) return;
  const int64_t d = j * V;
  VIDEOMAE_FOR_ROWS(m, rows) {
    float a[V], p[V];
    load_f32<V>(y, y_dtype, m * D + d, a);
    load_f32<V>(pos, pos_dtype, ids[m] * D + d, p);
#pragma unroll
    for (int k = 0; k < V; ++k) a[k] += round_to<To>(p[k]);  // pos.to(out dtype), then one rounded add
    store_f32<To, V>(out, m * D + d, a);
  }
}

}  // namespace

void cube_embed_gather(const void* videos, DType v_dtype, const CubeGeom& g, const int32_t* ids, int64_t n_sel,
                       const ChannelAffine& affine, void* patches, DType p_dtype, cudaStream_t stream) {
  const int64_t rows = g.B * n_sel;
  if (rows == 0) return;
  const int V = pick_vec({dtype_size(v_dtype), dtype_size(p_dtype)}, {videos, patches}, {g.p, g.W});
  const RowLaunch l = row_launch(rows, g.cube() / V);
  const int ns = static_cast<int>(n_sel);
  VIDEOMAE_DISPATCH_FLOAT(p_dtype, To, {
    To* out = static_cast<To*>(patches);
    if (V == 8)
      gather_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, ns, rows, affine, out);
    else if (V == 4)
      gather_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, ns, rows, affine, out);
    else
      gather_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(videos, v_dtype, g, ids, ns, rows, affine, out);
  });
  check_launch("cube_embed_gather");
}

void cube_embed_scatter(const void* grad_patches, const CubeGeom& g, const int32_t* inv, int64_t n_sel,
                        void* grad_videos, DType dtype, cudaStream_t stream) {
  const int64_t numel = g.B * g.C * g.T * g.H * g.W;
  if (numel == 0) return;
  const int s = dtype_size(dtype);
  const int V = pick_vec({s, s}, {grad_patches, grad_videos}, {g.p, g.W});
  const RowLaunch l = row_launch(g.B * g.C * g.T * g.H, g.W / V);
  VIDEOMAE_DISPATCH_FLOAT(dtype, T, {
    const T* gp = static_cast<const T*>(grad_patches);
    T* gv = static_cast<T*>(grad_videos);
    if (V == 8)
      scatter_kernel<T, 8><<<l.grid, l.block, 0, stream>>>(gp, g, inv, n_sel, gv);
    else if (V == 4)
      scatter_kernel<T, 4><<<l.grid, l.block, 0, stream>>>(gp, g, inv, n_sel, gv);
    else
      scatter_kernel<T, 1><<<l.grid, l.block, 0, stream>>>(gp, g, inv, n_sel, gv);
  });
  check_launch("cube_embed_scatter");
}

void cube_embed_add_pos(const void* y, DType y_dtype, const void* pos, DType pos_dtype, const int32_t* ids,
                        int64_t rows, int64_t D, void* out, DType out_dtype, cudaStream_t stream) {
  if (rows * D == 0) return;
  const int V = pick_vec({dtype_size(y_dtype), dtype_size(pos_dtype), dtype_size(out_dtype)}, {y, pos, out}, {D});
  const RowLaunch l = row_launch(rows, D / V);
  VIDEOMAE_DISPATCH_FLOAT(out_dtype, To, {
    To* o = static_cast<To*>(out);
    if (V == 8)
      add_pos_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, rows, D, o);
    else if (V == 4)
      add_pos_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, rows, D, o);
    else
      add_pos_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(y, y_dtype, pos, pos_dtype, ids, rows, D, o);
  });
  check_launch("cube_embed_add_pos");
}

}  // namespace videomae
