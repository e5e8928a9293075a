// Launchers of the videomae CUDA kernels: raw pointers and a cudaStream_t, no torch headers, so the
// .cu files compile in seconds. csrc/bindings.cpp validates the tensors and calls these.
// Layouts: videos [B, C, T, H, W] contiguous; cubes of t x p x p, tokens n = (it*Hp + ih)*Wp + iw;
// a cube's values in Conv3d weight order (c, dt, dy, dx) for cube_embed, and in pixel_loss order
// (dt, dy, dx, c), channel fastest, for norm_pix_mse.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

// The geometry helpers run on both sides; bindings.cpp is plain C++.
#ifdef __CUDACC__
#define VIDEOMAE_HD __host__ __device__
#else
#define VIDEOMAE_HD
#endif

namespace videomae {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, U8 = 3 };

struct CubeGeom {
  int64_t B, C, T, H, W;  // videos
  int64_t t, p;           // tubelet, patch
  VIDEOMAE_HD int64_t Tp() const { return T / t; }
  VIDEOMAE_HD int64_t Hp() const { return H / p; }
  VIDEOMAE_HD int64_t Wp() const { return W / p; }
  VIDEOMAE_HD int64_t tokens() const { return Tp() * Hp() * Wp(); }
  VIDEOMAE_HD int64_t cube() const { return C * t * p * p; }
};

// Per-channel affine applied to loaded pixels (uint8 -> normalized float); at most 4 channels.
struct ChannelAffine {
  float scale[4];
  float shift[4];
  bool on;
};

// ---- token_index.cu: the inverse of a token-id table, and the deterministic reductions shared by the backward
// passes. Token ids are int64 [B, n_sel], raster order; an id outside [0, N) is skipped by every kernel (it reads and
// writes nothing: its output row gets zeros, its pos term is 0, its loss weight is 0), so a bad id can never reach
// memory out of bounds. masking.TokenIds are validated in range and distinct on the CPU; the kernels do not report
// bad ones. A duplicated id (refused by that validation) stays in bounds too: the inverse map keeps one of its rows
// (which one is unspecified), so the backward passes that go through it count that row only.
// inv[b, n] = r where ids[b, r] == n, -1 for tokens not listed (one writer per token for ids without duplicates).
void inverse_index(const int64_t* ids, int64_t B, int64_t N, int64_t n_sel, int32_t* inv, cudaStream_t stream);
// out[n, d] (+)= sum over b, in order, of g[b*g_batch_stride + inv[b, n]*D + d] where 0 <= inv[b, n] < rows (fp32
// out): g holds `rows` rows of D per sample.
void scatter_rows_sum(const void* g, DType g_dtype, int64_t g_batch_stride, int64_t rows, const int32_t* inv,
                      int64_t B, int64_t N, int64_t D, bool accumulate, float* out, cudaStream_t stream);
// Column sums of rows r = b*rows_per_batch + j at g + b*batch_stride + j*D: out[d] in fp32, fixed summation
// order (two stages through `partial`, sized by col_sum_partial_size). No atomics.
int64_t col_sum_partial_size(int64_t rows, int64_t D);
void col_sum(const void* g, DType g_dtype, int64_t rows, int64_t rows_per_batch, int64_t batch_stride, int64_t D,
             float* partial, float* out, cudaStream_t stream);

// ---- cube_embed.cu
// patches[b*n_sel + r, (c, dt, dy, dx)] = affine(videos[b, c, it*t + dt, ih*p + dy, iw*p + dx]), n = ids[b, r]:
// any clip dtype (fp32, 16-bit, uint8) converted in registers to the patches' dtype.
void cube_embed_gather(const void* videos, DType v_dtype, const CubeGeom& g, const int64_t* ids, int64_t n_sel,
                       const ChannelAffine& affine, void* patches, DType p_dtype, cudaStream_t stream);
// grad_videos[b, c, T, H, W] (v_dtype) = grad_patches (p_dtype) row inv[b, n] of the cube holding it, 0 for cubes
// not embedded.
void cube_embed_scatter(const void* grad_patches, DType p_dtype, const CubeGeom& g, const int32_t* inv, int64_t n_sel,
                        void* grad_videos, DType v_dtype, cudaStream_t stream);
// out[m, d] = y[m, d] + pos[ids[m], d].to(out dtype), added in fp32 and rounded once; m = b*n_sel + r, N pos rows.
void cube_embed_add_pos(const void* y, DType y_dtype, const void* pos, DType pos_dtype, const int64_t* ids, int64_t N,
                        int64_t rows, int64_t D, void* out, DType out_dtype, cudaStream_t stream);

// ---- decoder_input.cu (its backward: a slice of grad, col_sum and scatter_rows_sum)
// out[b, r] = x_vis[b, r] + pos[ids_vis[b, r]] for r < n_vis; out[b, n_vis + j] = mask_token + pos[ids_dec[b, j]];
// N pos rows.
void decoder_input_fwd(const void* x_vis, DType x_dtype, const void* mask_token, DType t_dtype, const void* pos,
                       DType pos_dtype, const int64_t* ids_vis, const int64_t* ids_dec, int64_t N, int64_t B,
                       int64_t n_vis, int64_t n_dec, int64_t D, void* out, DType out_dtype, cudaStream_t stream);

// ---- norm_pix_mse.cu
struct NormPixMseArgs {
  const void* pred;  // [B, n_dec, cube] in pixel_loss order
  DType pred_dtype;
  const void* videos;
  DType v_dtype;
  CubeGeom g;
  const int64_t* ids;   // decoded tokens [B, n_dec]
  const bool* scored;   // [B, n_dec]: the V2 weight (0/1) of each decoded cube; null for V1 (all weights 1)
  int64_t n_dec;
  bool normalize;
  bool mae_st;          // joint eps-inside stats on the normalized input; else per-channel eps-outside on [0, 1]
  ChannelAffine unnorm;  // videomae style: normalized input -> [0, 1] pixels
};
// loss = sum_cubes w * sum (pred - target)^2 / (cube * sum_cubes w), into loss[0]; partial: B*n_dec floats.
// The weight sum is reduced on the device: no count travels to the host.
void norm_pix_mse_fwd(const NormPixMseArgs& a, float* partial, float* loss, cudaStream_t stream);
// grad_pred = 2 * grad_loss * w * (pred - target) / (cube * sum w), in pred's dtype; scratch: 1 float.
void norm_pix_mse_bwd(const NormPixMseArgs& a, const float* grad_loss, float* scratch, void* grad_pred,
                      cudaStream_t stream);

}  // namespace videomae
