"""Benchmarks: run on the machine to be measured, results written down in bench/README.md."""
