// Torch bindings of the videomae CUDA kernels: CUDA kernels (TORCH_LIBRARY_IMPL) and argument checks. The only
// translation unit that sees torch headers, so the .cu files stay quick to build (hence one file of ~400 lines).
// The schemas are not written here: Python defines them from the one table, videomae.ops.library.SCHEMAS
// (videomae/ops/cuda_backend.py, after importing this module). The dispatcher accepts an impl before its def and
// checks, when the def arrives, that each C++ signature below matches the Python schema (a mismatch raises there).
// Fake kernels and autograd are registered in Python too: videomae.ops.library.
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#ifndef VIDEOMAE_EMULATE
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that one needs cuBLAS/cuSPARSE/cuSOLVER headers
#endif
#include <c10/util/string_view.h>  // c10::string_view: the `str` argument type in every torch >= 2.11
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "videomae_kernels.h"

// The op's device and torch's current stream on it: every kernel and cuBLAS call of the op runs there. Autocast is
// off inside the op: its matmuls run in the dtypes chosen here (an autocast addmm would hand back a buffer of another
// dtype than the kernels write). VIDEOMAE_EMULATE (csrc/emu/cuda_emu.h, the CI tests' CPU emulation) runs the
// kernels on CPU tensors instead.
#ifdef VIDEOMAE_EMULATE
#define VIDEOMAE_DEVICE_AND_STREAM(t)                                            \
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset); \
  const cudaStream_t stream = nullptr
#else
#define VIDEOMAE_DEVICE_AND_STREAM(t)                                            \
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset); \
  const c10::cuda::CUDAGuard guard((t).device());                                \
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream()
#endif

namespace {

using at::Tensor;

bool on_device(const Tensor& t) {
#ifdef VIDEOMAE_EMULATE
  return t.is_cpu();
#else
  return t.is_cuda();
#endif
}

using videomae::CubeGeom;
using videomae::DType;

// Bad input raises ValueError in Python (TORCH_CHECK_VALUE), naming the argument. These are shape, dtype and
// device checks only: no op reads a tensor's values on the host (token ids are validated by masking.token_ids).
DType dtype_of(const Tensor& t, const char* name, bool allow_uint8) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kByte:
      if (allow_uint8) return DType::U8;
      break;
    default: break;
  }
  TORCH_CHECK_VALUE(false, name, " must be float32, float16 or bfloat16", allow_uint8 ? " (or uint8)" : "", ", got ",
                    t.scalar_type());
  return DType::F32;  // unreachable
}

void check_tensor(const Tensor& t, const char* name, const Tensor& ref) {
  TORCH_CHECK_VALUE(on_device(t), name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.device() == ref.device(), name, " must be on ", ref.device(), " like the other inputs, got ",
                    t.device());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, " must be contiguous");
}

// Token ids: int64 [B, K], K <= N. Their values are not read here; the kernels skip ids outside [0, N).
void check_ids(const Tensor& ids, const char* name, int64_t B, int64_t N, const Tensor& ref) {
  check_tensor(ids, name, ref);
  TORCH_CHECK_VALUE(ids.scalar_type() == at::kLong, name, " must be int64 token ids, got ", ids.scalar_type());
  TORCH_CHECK_VALUE(ids.dim() == 2 && ids.size(0) == B && ids.size(1) <= N, name, " must be [", B, ", K] with K <= ",
                    N, " (batch x token ids), got ", ids.sizes());
}

CubeGeom geometry(const Tensor& videos, int64_t tubelet, int64_t patch) {
  TORCH_CHECK_VALUE(videos.dim() == 5, "videos must be [B, C, T, H, W], got ", videos.sizes());
  TORCH_CHECK_VALUE(tubelet > 0 && patch > 0, "tubelet_size and patch_size must be positive, got ", tubelet, ", ",
                    patch);
  CubeGeom g{videos.size(0), videos.size(1), videos.size(2), videos.size(3), videos.size(4), tubelet, patch};
  TORCH_CHECK_VALUE(g.T % tubelet == 0 && g.H % patch == 0 && g.W % patch == 0, "videos T=", g.T, ", H=", g.H,
                    ", W=", g.W, " must be divisible by the cube (", tubelet, ", ", patch, ", ", patch, ")");
  // Token ids and per-row index math are 32-bit.
  TORCH_CHECK_VALUE(g.B * g.tokens() < (int64_t{1} << 31) && g.B * g.C * g.T * g.H < (int64_t{1} << 31),
                    "videos is too large for 32-bit token indices, got ", videos.sizes());
  return g;
}

// Per-channel affine from (mean, std) lists of length C (at most 4 channels: the kernels keep them in registers).
videomae::ChannelAffine affine(at::ArrayRef<double> mean, at::ArrayRef<double> std, int64_t C, bool from_uint8) {
  TORCH_CHECK_VALUE(C >= 1 && C <= 4, "videos must have 1 to 4 channels, got ", C);
  TORCH_CHECK_VALUE(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
                    "mean and std must have one value per channel (", C, "), got ", mean.size(), " and ", std.size());
  videomae::ChannelAffine a{};
  a.on = true;
  for (int64_t c = 0; c < C; ++c) {
    TORCH_CHECK_VALUE(std[c] > 0, "std must be positive, got ", std[c]);
    // uint8: (x / 255 - mean) / std; float (the loss target): x * std + mean.
    a.scale[c] = static_cast<float>(from_uint8 ? 1.0 / (255.0 * std[c]) : std[c]);
    a.shift[c] = static_cast<float>(from_uint8 ? -mean[c] / std[c] : mean[c]);
  }
  return a;
}

// Deterministic fp32 column sums of `rows` rows of width D (see col_sum in videomae_kernels.h).
Tensor column_sum(const void* g, DType g_dtype, int64_t rows, int64_t rows_per_batch, int64_t batch_stride, int64_t D,
                  const Tensor& ref, cudaStream_t stream) {
  auto f32 = ref.options().dtype(at::kFloat);
  Tensor partial = at::empty({videomae::col_sum_partial_size(rows, D)}, f32);
  Tensor out = at::empty({D}, f32);
  videomae::col_sum(g, g_dtype, rows, rows_per_batch, batch_stride, D, partial.data_ptr<float>(),
                    out.data_ptr<float>(), stream);
  return out;
}

const void* row_ptr(const Tensor& t, int64_t offset_elems) {
  return static_cast<const char*>(t.data_ptr()) + offset_elems * t.element_size();
}

Tensor empty_f32(const Tensor& ref, at::IntArrayRef sizes) { return at::empty(sizes, ref.options().dtype(at::kFloat)); }

// pos: [N, D] or [1, N, D], any float dtype (read and converted in registers).
void check_pos(const Tensor& pos, int64_t N, int64_t D, const Tensor& ref) {
  check_tensor(pos, "pos", ref);
  dtype_of(pos, "pos", false);
  TORCH_CHECK_VALUE(pos.numel() == N * D && pos.dim() >= 2 && pos.size(-1) == D && pos.size(-2) == N,
                    "pos must be [N, D] or [1, N, D] with N=", N, ", D=", D, ", got ", pos.sizes());
}

struct CubeEmbedArgs {
  CubeGeom g;
  DType v_dtype, w_dtype;
  int64_t D, K, N, n_vis;
  videomae::ChannelAffine aff;
};

// The clip may be fp32, 16-bit or uint8 whatever the weight's dtype: the gather converts it in registers.
CubeEmbedArgs cube_embed_args(const Tensor& videos, const Tensor& weight, const Tensor& visible,
                              at::ArrayRef<double> mean, at::ArrayRef<double> std) {
  check_tensor(videos, "videos", videos);
  check_tensor(weight, "weight", videos);
  CubeEmbedArgs a;
  a.v_dtype = dtype_of(videos, "videos", true);
  a.w_dtype = dtype_of(weight, "weight", false);
  TORCH_CHECK_VALUE(weight.dim() == 5 && weight.size(3) == weight.size(4), "weight must be [D, C, t, p, p], got ",
                    weight.sizes());
  a.g = geometry(videos, weight.size(2), weight.size(3));
  a.D = weight.size(0), a.K = a.g.cube(), a.N = a.g.tokens();
  TORCH_CHECK_VALUE(weight.size(1) == a.g.C, "weight must have ", a.g.C, " input channels like videos, got ",
                    weight.size(1));
  check_ids(visible, "visible", a.g.B, a.N, videos);
  a.n_vis = visible.size(1);
  a.aff = a.v_dtype == DType::U8 ? affine(mean, std, a.g.C, true) : videomae::ChannelAffine{{}, {}, false};
  return a;
}

// ------------------------------------------------------------------------------------------------ cube_embed
// -> [B, N_vis, D] in weight's dtype: conv output (+ bias) + pos.to(weight's dtype), visible tokens only.
Tensor cube_embed_cuda(const Tensor& videos, const Tensor& weight, const std::optional<Tensor>& bias,
                       const std::optional<Tensor>& pos, const Tensor& visible, at::ArrayRef<double> mean,
                       at::ArrayRef<double> std) {
  const CubeEmbedArgs a = cube_embed_args(videos, weight, visible, mean, std);
  const CubeGeom& g = a.g;
  if (bias) {
    TORCH_CHECK_VALUE(on_device(*bias) && bias->device() == videos.device(), "bias must be on ", videos.device(),
                      ", got ", bias->device());
    dtype_of(*bias, "bias", false);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == a.D, "bias must be [", a.D, "], got ", bias->sizes());
  }
  if (pos) check_pos(*pos, a.N, a.D, videos);

  VIDEOMAE_DEVICE_AND_STREAM(videos);
  const int64_t M = g.B * a.n_vis;
  const int64_t* ids = visible.data_ptr<int64_t>();
  Tensor patches = at::empty({M, a.K}, weight.options());
  videomae::cube_embed_gather(videos.data_ptr(), a.v_dtype, g, ids, a.n_vis, a.aff, patches.data_ptr(), a.w_dtype,
                              stream);
  const Tensor w2 = weight.view({a.D, a.K});
  // The bias (D values) in weight's dtype, as autocast's conv3d casts it: added in cuBLAS's epilogue, one rounding.
  Tensor y = bias ? at::addmm(bias->to(weight.scalar_type()), patches, w2.t()) : at::mm(patches, w2.t());
  if (pos)  // in place: each element is read, then written, by the same thread
    videomae::cube_embed_add_pos(y.data_ptr(), a.w_dtype, pos->data_ptr(), dtype_of(*pos, "pos", false), ids, a.N, M,
                                 a.D, y.data_ptr(), a.w_dtype, stream);
  return y.view({g.B, a.n_vis, a.D});
}

// needs = (videos, weight, bias, pos) -> (d videos [videos' dtype], d weight [weight's dtype], d bias fp32 [D],
// d pos fp32 [N, D]); grads not needed come back empty.
std::tuple<Tensor, Tensor, Tensor, Tensor> cube_embed_cuda_backward(const Tensor& grad, const Tensor& videos,
                                                                    const Tensor& weight, const Tensor& visible,
                                                                    at::ArrayRef<double> mean, at::ArrayRef<double> std,
                                                                    const c10::List<bool>& needs) {
  const CubeEmbedArgs a = cube_embed_args(videos, weight, visible, mean, std);
  const CubeGeom& g = a.g;
  TORCH_CHECK_VALUE(needs.size() == 4, "needs must have 4 flags (videos, weight, bias, pos), got ", needs.size());
  const bool need_videos = needs[0], need_weight = needs[1], need_bias = needs[2], need_pos = needs[3];
  TORCH_CHECK_VALUE(on_device(grad) && grad.device() == videos.device(), "grad must be on ", videos.device(),
                    ", got ", grad.device());
  dtype_of(grad, "grad", false);
  TORCH_CHECK_VALUE(grad.dim() == 3 && grad.size(0) == g.B && grad.size(1) == a.n_vis && grad.size(2) == a.D,
                    "grad must be [", g.B, ", ", a.n_vis, ", ", a.D, "] (batch x visible x D), got ", grad.sizes());
  TORCH_CHECK_VALUE(!need_videos || a.v_dtype != DType::U8, "videos of dtype uint8 have no gradient");
  const int64_t M = g.B * a.n_vis;

  VIDEOMAE_DEVICE_AND_STREAM(videos);
  const Tensor gy = grad.to(weight.scalar_type()).contiguous().view({M, a.D});
  const int64_t* ids = visible.data_ptr<int64_t>();
  Tensor inv;  // token -> visible row, for the scatters
  if (need_videos || need_pos) {
    inv = at::empty({g.B, a.N}, visible.options().dtype(at::kInt));
    videomae::inverse_index(ids, g.B, a.N, a.n_vis, inv.data_ptr<int32_t>(), stream);
  }
  const Tensor w2 = weight.view({a.D, a.K});
  Tensor gv = grad.new_empty({0}), gw = weight.new_empty({0}), gb = empty_f32(grad, {0}), gp = empty_f32(grad, {0});
  if (need_weight) {
    Tensor patches = at::empty({M, a.K}, weight.options());  // recomputed: a read of the visible cubes only
    videomae::cube_embed_gather(videos.data_ptr(), a.v_dtype, g, ids, a.n_vis, a.aff, patches.data_ptr(), a.w_dtype,
                                stream);
    gw = at::mm(gy.t(), patches).view(weight.sizes());
  }
  if (need_bias) gb = column_sum(gy.data_ptr(), a.w_dtype, M, M, 0, a.D, grad, stream);
  if (need_pos) {
    gp = empty_f32(grad, {a.N, a.D});
    videomae::scatter_rows_sum(gy.data_ptr(), a.w_dtype, a.n_vis * a.D, a.n_vis, inv.data_ptr<int32_t>(), g.B, a.N, a.D,
                               false, gp.data_ptr<float>(), stream);
  }
  if (need_videos) {
    const Tensor grad_patches = at::mm(gy, w2);  // weight's dtype; the scatter converts to the clip's
    gv = at::empty_like(videos);
    videomae::cube_embed_scatter(grad_patches.data_ptr(), a.w_dtype, g, inv.data_ptr<int32_t>(), a.n_vis,
                                 gv.data_ptr(), a.v_dtype, stream);
  }
  return {gv, gw, gb, gp};
}

// ------------------------------------------------------------------------------------------------ decoder_input
// -> [B, N_vis + N_dec, Dd] in x_vis' dtype, sums in fp32: visible rows first, decoded ones second.
Tensor decoder_input_cuda(const Tensor& x_vis, const Tensor& mask_token, const Tensor& pos, const Tensor& visible,
                          const Tensor& decoded) {
  check_tensor(x_vis, "x_vis", x_vis);
  const DType x_dtype = dtype_of(x_vis, "x_vis", false);
  TORCH_CHECK_VALUE(x_vis.dim() == 3, "x_vis must be [B, N_vis, D], got ", x_vis.sizes());
  const int64_t B = x_vis.size(0), n_vis = x_vis.size(1), D = x_vis.size(2);
  check_tensor(mask_token, "mask_token", x_vis);
  const DType t_dtype = dtype_of(mask_token, "mask_token", false);
  TORCH_CHECK_VALUE(mask_token.numel() == D && mask_token.size(-1) == D, "mask_token must have ", D,
                    " values (e.g. [1, 1, D]), got ", mask_token.sizes());
  TORCH_CHECK_VALUE(pos.dim() >= 2, "pos must be [N, D] or [1, N, D], got ", pos.sizes());
  const int64_t N = pos.size(-2);
  check_pos(pos, N, D, x_vis);
  check_ids(visible, "visible", B, N, x_vis);
  check_ids(decoded, "decoded", B, N, x_vis);
  TORCH_CHECK_VALUE(visible.size(1) == n_vis, "visible must list x_vis' ", n_vis, " tokens, got ", visible.sizes());
  const int64_t n_dec = decoded.size(1);

  VIDEOMAE_DEVICE_AND_STREAM(x_vis);
  Tensor out = at::empty({B, n_vis + n_dec, D}, x_vis.options());
  videomae::decoder_input_fwd(x_vis.data_ptr(), x_dtype, mask_token.data_ptr(), t_dtype, pos.data_ptr(),
                              dtype_of(pos, "pos", false), visible.data_ptr<int64_t>(), decoded.data_ptr<int64_t>(), N,
                              B, n_vis, n_dec, D, out.data_ptr(), x_dtype, stream);
  return out;
}

// -> (d x_vis [grad's dtype], d mask_token fp32 [Dd], d pos fp32 [num_tokens, Dd] or empty).
std::tuple<Tensor, Tensor, Tensor> decoder_input_cuda_backward(const Tensor& grad, const Tensor& visible,
                                                               const Tensor& decoded, int64_t num_tokens,
                                                               bool need_pos) {
  TORCH_CHECK_VALUE(on_device(grad) && grad.dim() == 3, "grad must be a CUDA tensor [B, N_vis + N_dec, D], got ",
                    grad.sizes(), " on ", grad.device());
  const DType g_dtype = dtype_of(grad, "grad", false);
  TORCH_CHECK_VALUE(num_tokens >= 0 && num_tokens < (int64_t{1} << 31), "num_tokens must be in [0, 2^31), got ",
                    num_tokens);
  const int64_t B = grad.size(0), D = grad.size(2), N = num_tokens;
  check_ids(visible, "visible", B, N, grad);
  check_ids(decoded, "decoded", B, N, grad);
  const int64_t n_vis = visible.size(1), n_dec = decoded.size(1), rows = n_vis + n_dec;
  TORCH_CHECK_VALUE(grad.size(1) == rows, "grad must have N_vis + N_dec = ", rows, " rows, got ", grad.sizes());

  VIDEOMAE_DEVICE_AND_STREAM(grad);
  const Tensor g = grad.contiguous();
  const Tensor gx = g.narrow(1, 0, n_vis).clone(at::MemoryFormat::Contiguous);  // outputs may not alias inputs
  const Tensor gm = column_sum(row_ptr(g, n_vis * D), g_dtype, B * n_dec, n_dec, rows * D, D, g, stream);
  Tensor gp = empty_f32(g, {0});
  if (need_pos) {
    // A token both visible and decoded (V2) gets both rows' grads: two ordered passes, no atomics.
    Tensor inv = at::empty({2, B, N}, visible.options().dtype(at::kInt));
    int32_t* inv_vis = inv.data_ptr<int32_t>();
    int32_t* inv_dec = inv_vis + B * N;
    videomae::inverse_index(visible.data_ptr<int64_t>(), B, N, n_vis, inv_vis, stream);
    videomae::inverse_index(decoded.data_ptr<int64_t>(), B, N, n_dec, inv_dec, stream);
    gp = empty_f32(g, {N, D});
    videomae::scatter_rows_sum(g.data_ptr(), g_dtype, rows * D, n_vis, inv_vis, B, N, D, false, gp.data_ptr<float>(),
                               stream);
    videomae::scatter_rows_sum(row_ptr(g, n_vis * D), g_dtype, rows * D, n_dec, inv_dec, B, N, D, true,
                               gp.data_ptr<float>(), stream);
  }
  return {gx, gm, gp};
}

// ------------------------------------------------------------------------------------------------ norm_pix_mse
videomae::NormPixMseArgs norm_pix_mse_args(const Tensor& pred, const Tensor& videos, const Tensor& decoded,
                                           const std::optional<Tensor>& scored, int64_t tubelet_size,
                                           int64_t patch_size, bool normalize_target, c10::string_view style,
                                           at::ArrayRef<double> mean, at::ArrayRef<double> std) {
  check_tensor(videos, "videos", videos);
  check_tensor(pred, "pred", videos);
  TORCH_CHECK_VALUE(style == "videomae" || style == "mae_st", "style must be 'videomae' or 'mae_st', got '", style,
                    "'");
  videomae::NormPixMseArgs a{};
  a.v_dtype = dtype_of(videos, "videos", true);
  a.pred_dtype = dtype_of(pred, "pred", false);
  a.g = geometry(videos, tubelet_size, patch_size);
  const int64_t N = a.g.tokens(), K = a.g.cube();
  TORCH_CHECK_VALUE(a.g.C >= 1 && a.g.C <= 4, "videos must have 1 to 4 channels, got ", a.g.C);
  // The cube is staged in shared memory as fp32: 40960 values (160 KiB) fit on sm_80 and sm_90.
  TORCH_CHECK_VALUE(K <= 40960, "a cube of ", K, " values is too large (at most 40960)");
  check_ids(decoded, "decoded", a.g.B, N, videos);
  a.n_dec = decoded.size(1);
  TORCH_CHECK_VALUE(pred.dim() == 3 && pred.size(0) == a.g.B && pred.size(1) == a.n_dec && pred.size(2) == K,
                    "pred must be [", a.g.B, ", ", a.n_dec, ", ", K, "] (decoded cubes x values), got ", pred.sizes());
  if (scored) {
    check_tensor(*scored, "scored", videos);
    TORCH_CHECK_VALUE(scored->scalar_type() == at::kBool, "scored must be bool, got ", scored->scalar_type());
    TORCH_CHECK_VALUE(scored->dim() == 2 && scored->size(0) == a.g.B && scored->size(1) == a.n_dec, "scored must be [",
                      a.g.B, ", ", a.n_dec, "] like decoded, got ", scored->sizes());
  }
  a.pred = pred.data_ptr();
  a.videos = videos.data_ptr();
  a.ids = decoded.data_ptr<int64_t>();
  a.scored = scored ? scored->data_ptr<bool>() : nullptr;
  a.normalize = normalize_target;
  a.mae_st = style == "mae_st";
  // videomae works on [0, 1] pixels, mae_st on the normalized clip: uint8 x -> x / 255 or (x / 255 - mean) / std;
  // a float (normalized) clip -> x * std + mean or x.
  const bool u8 = a.v_dtype == DType::U8;
  a.unnorm = videomae::ChannelAffine{{}, {}, false};
  if (u8 && a.mae_st) {
    a.unnorm = affine(mean, std, a.g.C, true);
  } else if (u8) {
    a.unnorm.on = true;
    for (int c = 0; c < 4; ++c) a.unnorm.scale[c] = 1.f / 255.f, a.unnorm.shift[c] = 0.f;
  } else if (!a.mae_st) {
    a.unnorm = affine(mean, std, a.g.C, false);
  }
  return a;
}

// -> scalar fp32 loss
Tensor norm_pix_mse_cuda(const Tensor& pred, const Tensor& videos, const Tensor& decoded,
                         const std::optional<Tensor>& scored, int64_t tubelet_size, int64_t patch_size,
                         bool normalize_target, c10::string_view style, at::ArrayRef<double> mean,
                         at::ArrayRef<double> std) {
  const videomae::NormPixMseArgs a = norm_pix_mse_args(pred, videos, decoded, scored, tubelet_size, patch_size,
                                                       normalize_target, style, mean, std);
  VIDEOMAE_DEVICE_AND_STREAM(videos);
  Tensor partial = empty_f32(videos, {a.g.B * a.n_dec});
  Tensor loss = empty_f32(videos, {});
  videomae::norm_pix_mse_fwd(a, partial.data_ptr<float>(), loss.data_ptr<float>(), stream);
  return loss;
}

// -> d pred in pred's dtype
Tensor norm_pix_mse_cuda_backward(const Tensor& grad, const Tensor& pred, const Tensor& videos, const Tensor& decoded,
                                  const std::optional<Tensor>& scored, int64_t tubelet_size, int64_t patch_size,
                                  bool normalize_target, c10::string_view style, at::ArrayRef<double> mean,
                                  at::ArrayRef<double> std) {
  const videomae::NormPixMseArgs a = norm_pix_mse_args(pred, videos, decoded, scored, tubelet_size, patch_size,
                                                       normalize_target, style, mean, std);
  TORCH_CHECK_VALUE(on_device(grad) && grad.device() == videos.device() && grad.numel() == 1,
                    "grad must be a scalar on ", videos.device(), ", got ", grad.sizes(), " on ", grad.device());
  VIDEOMAE_DEVICE_AND_STREAM(videos);
  const Tensor g = grad.to(at::kFloat).contiguous();
  Tensor scratch = empty_f32(videos, {1});
  Tensor grad_pred = at::empty_like(pred);
  videomae::norm_pix_mse_bwd(a, g.data_ptr<float>(), scratch.data_ptr<float>(), grad_pred.data_ptr(), stream);
  return grad_pred;
}

// Kernel launch failures arrive as std::runtime_error -> RuntimeError.
void impl_ops(torch::Library& m) {
  m.impl("cube_embed_cuda", &cube_embed_cuda);
  m.impl("cube_embed_cuda_backward", &cube_embed_cuda_backward);
  m.impl("decoder_input_cuda", &decoder_input_cuda);
  m.impl("decoder_input_cuda_backward", &decoder_input_cuda_backward);
  m.impl("norm_pix_mse_cuda", &norm_pix_mse_cuda);
  m.impl("norm_pix_mse_cuda_backward", &norm_pix_mse_cuda_backward);
}

}  // namespace

// Kernels only: each op's schema is defined in Python (videomae.ops.library.SCHEMAS), before or after this runs.
#ifdef VIDEOMAE_EMULATE
TORCH_LIBRARY_IMPL(videomae_emu, CPU, m) { impl_ops(m); }
#else
TORCH_LIBRARY_IMPL(videomae, CUDA, m) { impl_ops(m); }
#endif

// `import videomae._C` runs the registration above; the module itself exposes nothing.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "videomae CUDA kernels: see torch.ops.videomae", -1,
                               nullptr};
  return PyModule_Create(&module);
}
