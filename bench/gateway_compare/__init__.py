"""The side-by-side benchmark behind `bench/gateway_bench.py`: its servers, callers, loads and report."""
