"""Helpers the tests, the benchmarks (bench/) and the test cluster import: tooling, never
shipped. Fixtures stay in tests/conftest.py."""
