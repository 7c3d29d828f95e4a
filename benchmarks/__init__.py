"""Benchmarks: scripts that measure speed, accuracy and label efficiency (run by `make bench`)."""
