"""Op microbenchmarks (pytest-benchmark) and GPU checks of the fused ops, one file per op, named after it.

    pytest bench/ops --benchmark-only --benchmark-json ops.json   # every op x backend x mode, GB/s in extra_info
    pytest bench/ops/bench_cube_embed.py --benchmark-only         # one op
    pytest bench/ops --benchmark-disable                          # each benchmark once, untimed (CI)
    python -m bench.ops [--rehearse]                              # the same run, into bench/results/ops.json
    python -m bench.ops.smoke [--rehearse]                        # bf16 correctness of every backend
    python -m bench.ops.sanitize                                  # the compute-sanitizer workload

On a GPU the benchmarks time ViT-B pretraining shapes (--bench-models S,B,L for more); on the CPU one tiny shape.
See bench/ops/opbench.py for what is timed and how.
"""
