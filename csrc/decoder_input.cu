// decoder_input: [x_vis + pos[visible] ; mask_token + pos[decoded]] in one pass over the output.
// Sums in fp32 and rounds once to the output dtype (x_vis's), like the reference `(x.float() + pos.float()).to(dtype)`.
// The backward needs no kernel of its own: a slice for x_vis, token_index.cu's col_sum for mask_token.
#include "common.cuh"

namespace videomae {

namespace {

// Output rows (b, r), r < n_vis visible, else decoded; thread j owns channels [j*V, j*V + V) of every row it visits.
// An id outside [0, N) adds no pos.
template <typename To, int V>
__global__ void decoder_input_kernel(const void* __restrict__ x_vis, DType x_dtype, const void* __restrict__ token,
                                     DType t_dtype, const void* __restrict__ pos, DType pos_dtype,
                                     const int64_t* __restrict__ ids_vis, const int64_t* __restrict__ ids_dec,
                                     int64_t N, int64_t B, int64_t n_vis, int64_t n_dec, int64_t D,
                                     To* __restrict__ out) {
  const int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (j >= D / V) return;
  const int64_t d = j * V, rows = n_vis + n_dec;
  float tok[V];  // the mask token's slice is the same for every decoded row
  load_f32<V>(token, t_dtype, d, tok);
  VIDEOMAE_FOR_ROWS(row, B * rows) {
    const int64_t b = row / rows, r = row - b * rows;
    float a[V], p[V];
    int64_t n;
    if (r < n_vis) {
      load_f32<V>(x_vis, x_dtype, (b * n_vis + r) * D + d, a);
      n = ids_vis[b * n_vis + r];
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) a[k] = tok[k];
      n = ids_dec[b * n_dec + (r - n_vis)];
    }
    if (n >= 0 && n < N) {
      load_f32<V>(pos, pos_dtype, n * D + d, p);
#pragma unroll
      for (int k = 0; k < V; ++k) a[k] += p[k];
    }
    store_f32<To, V>(out, row * D + d, a);
  }
}

}  // namespace

void decoder_input_fwd(const void* x_vis, DType x_dtype, const void* mask_token, DType t_dtype, const void* pos,
                       DType pos_dtype, const int64_t* ids_vis, const int64_t* ids_dec, int64_t N, int64_t B,
                       int64_t n_vis, int64_t n_dec, int64_t D, void* out, DType out_dtype, cudaStream_t stream) {
  const int64_t numel = B * (n_vis + n_dec) * D;
  if (numel == 0) return;
  // 16-byte accesses for every operand, or scalar ones: V must divide D and keep all pointers aligned.
  int max_size = dtype_size(x_dtype);
  for (DType t : {t_dtype, pos_dtype, out_dtype}) max_size = dtype_size(t) > max_size ? dtype_size(t) : max_size;
  int V = 1;
  for (int v : {8, 4}) {
    if (V == 1 && v * max_size <= 16 && D % v == 0 && aligned(x_vis, v * dtype_size(x_dtype)) &&
        aligned(mask_token, v * dtype_size(t_dtype)) && aligned(pos, v * dtype_size(pos_dtype)) &&
        aligned(out, v * dtype_size(out_dtype)))
      V = v;
  }
  const RowLaunch l = row_launch(B * (n_vis + n_dec), D / V);
  VIDEOMAE_DISPATCH_FLOAT(out_dtype, To, {
    To* o = static_cast<To*>(out);
    if (V == 8)
      decoder_input_kernel<To, 8><<<l.grid, l.block, 0, stream>>>(x_vis, x_dtype, mask_token, t_dtype, pos, pos_dtype,
                                                                 ids_vis, ids_dec, N, B, n_vis, n_dec, D, o);
    else if (V == 4)
      decoder_input_kernel<To, 4><<<l.grid, l.block, 0, stream>>>(x_vis, x_dtype, mask_token, t_dtype, pos, pos_dtype,
                                                                 ids_vis, ids_dec, N, B, n_vis, n_dec, D, o);
    else
      decoder_input_kernel<To, 1><<<l.grid, l.block, 0, stream>>>(x_vis, x_dtype, mask_token, t_dtype, pos, pos_dtype,
                                                                 ids_vis, ids_dec, N, B, n_vis, n_dec, D, o);
  });
  check_launch("decoder_input_fwd");
}

}  // namespace videomae
