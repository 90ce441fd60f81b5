"""Throughput benchmarks (installed as ``sft_conformance.bench``): padding vs packing."""
