"""`python -m bench.ops`: every op's microbenchmark in one process (see bench/ops/harness.py for the flags)."""

import sys

from bench.ops.bench_attention import DECODER as ATTENTION_DECODER
from bench.ops.bench_attention import ENCODER as ATTENTION_ENCODER
from bench.ops.bench_cube_embed import BENCH as CUBE_EMBED
from bench.ops.bench_decoder_input import BENCH as DECODER_INPUT
from bench.ops.bench_norm_pix_mse import BENCH as NORM_PIX_MSE
from bench.ops.harness import main

sys.exit(main([CUBE_EMBED, DECODER_INPUT, NORM_PIX_MSE, ATTENTION_ENCODER, ATTENTION_DECODER]))
