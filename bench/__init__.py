"""Benchmarks that run posescore beside its peers in one process and print the ratios."""
