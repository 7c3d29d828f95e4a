"""Benchmarks of the influence engine (``influal bench scoring|scaling|solvers|fidelity --json``).

Each benchmark is a function returning a JSON-serialisable dict of measured figures. Ratios are always
measured side by side in one run on one machine.
"""

from .engine import BENCHMARKS, fidelity, scaling, scoring, solvers

__all__ = ["BENCHMARKS", "fidelity", "scaling", "scoring", "solvers"]
