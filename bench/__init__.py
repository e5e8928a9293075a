"""Benchmarks and GPU checks (run from the repository root: `python -m bench.ops`, `python bench/train_step.py`,
`bash bench/gpu.sh`). A regular package, so that no installed `bench` module can shadow it."""
