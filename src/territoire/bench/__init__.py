"""Reproducible benchmarks (``territoire bench ...``); figures are recorded in docs/benchmarks.md."""
