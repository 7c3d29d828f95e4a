"""Application services on top of the loop and the report: running an experiment with its reports, and the
influence self-check. The CLI and the Python API call these."""

from .run import run_experiment

__all__ = ["run_experiment"]
