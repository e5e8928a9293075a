"""Op microbenchmarks and GPU checks of the fused ops, one file per op, named after it.

    python -m bench.ops                          # every op: each backend vs the eager reference at ViT-S/B/L
    python -m bench.ops.bench_cube_embed         # one op
    python -m bench.ops --rehearse               # the same code paths on the CPU at a tiny shape
    python -m bench.ops.smoke [--rehearse]       # bf16 correctness of every backend, op and model level
    python -m bench.ops.sanitize                 # the compute-sanitizer workload (bench/gpu.sh runs it)

Rows go to bench/results/ops.json and smoke.json through `bench.common.ResultWriter`.
"""
