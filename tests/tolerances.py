"""Tolerances of the op tests, one table: (atol, rtol) for `torch.testing.assert_close` against an fp64 oracle.

atol is relative to the reference tensor's largest magnitude (at least 1): a sum of many terms (a weight
gradient adds B*N_vis products) carries the rounding of its terms, not of its result, so an entry that
cancels to ~0 still has an error on the scale of the largest entries. The test inputs are O(1)
(unit-variance clips, weights ~ N(0, 1/K)); an indexing bug moves values by O(1), far above every entry.
"""

import torch

# Outputs and input gradients of cube_embed / decoder_input, by the dtype the op computes in.
TOL = {
    # fp32: at most K = C*t*p*p = 1536 products summed in fp32 (plus torch's own order in the eager path),
    # error ~ sqrt(K) * 2^-24 * O(1) ~ 1e-6; 10x headroom.
    torch.float32: (1e-5, 1e-5),
    # fp16: the inputs are the same fp16 values in the oracle; the output is rounded once (2^-11 relative) and
    # pos is rounded to fp16 before the add, as the official `type_as` does: two half-ulps at |x| < 8, i.e. 4e-3
    # (the bound is relative to the largest entry, >= 1).
    torch.float16: (4e-3, 2e-3),
    # bf16: as fp16 with 2^-8 relative rounding: two half-ulps at |x| < 8 = 3.1e-2 absolute, 2^-7 relative;
    # CPU bf16 matmuls (the eager weight gradient) also round partial sums, hence 2^-5 of the largest entry.
    torch.bfloat16: (3.2e-2, 1.6e-2),
}

# norm_pix_mse: the loss is computed in fp32 from pred and the clip as given (the oracle uses the same
# values in fp64), so every dtype sees only fp32 reductions: per-cube mean/var over <= 1536 values and
# a sum over cubes, ~ 1e-6 relative; 1e-5 leaves 10x headroom.
LOSS_TOL = (1e-6, 1e-5)

# d pred is 2 w (pred - target), rounded to pred's dtype: the fp32 entry as above, low precision one
# rounding (half-ulp: 2^-12 fp16, 2^-9 bf16) on values ~1e-3 (w = 1 / #values), i.e. rtol-dominated.
LOSS_GRAD_TOL = {
    torch.float32: (1e-8, 1e-5),
    torch.float16: (1e-7, 1e-3),
    torch.bfloat16: (1e-6, 8e-3),
}

# GPU (flash-attention criterion): a kernel's max error against fp64 may be at most this multiple of the eager
# reference's error in the same dtype, plus ERROR_FLOOR x the oracle's largest magnitude, for outputs the
# reference happens to get (nearly) exact: for 16-bit results one rounding (2^-11, 2^-8) times ~2 for the
# different summation order; for fp32 results (the loss is fp32 for every dtype) a tree reduction over up to
# 69M values (log2 ~ 26 levels of 2^-24), ~2e-6. All far below the O(1) relative error of a wrong index.
ERROR_RATIO = 2.0
ERROR_FLOOR = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
