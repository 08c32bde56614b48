"""Benchmark harnesses, run from the repository root by `make bench` and its siblings
(see README.md). Tooling: never in the wheel or the image."""
