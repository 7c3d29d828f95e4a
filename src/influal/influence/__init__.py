"""The influence engine: parameter scopes, gradients, Hessian-vector products, solvers, scores.

It knows nothing about images or boxes: it talks to models only through a Task and the task's InfluenceHooks.
"""

import warnings as _warnings

with _warnings.catch_warnings():
    # torch.func's forward-mode decompositions call the deprecated torch.jit.script once, at first import;
    # import them here so users do not see torch's internal FutureWarning on every run.
    _warnings.simplefilter("ignore", FutureWarning)
    try:
        import torch._decomp.decompositions_for_jvp  # noqa: F401
    except ImportError:  # a torch without that module has nothing to silence
        pass

from .engine import InfluenceEngine, InfluenceResult, resolve_config
from .grads import per_sample_dot, reference_gradient
from .hvp import HessianOperator
from .kfac import KroneckerCurvature
from .params import ParamScope
from .solvers import (AutoLiSSA, ConjugateGradient, ExactSolver, IdentitySolver, KroneckerSolver, LiSSA, SolveResult,
                      make_solver)

__all__ = ["AutoLiSSA", "ConjugateGradient", "ExactSolver", "HessianOperator", "IdentitySolver",
           "InfluenceEngine", "InfluenceResult", "KroneckerCurvature", "KroneckerSolver", "LiSSA", "ParamScope", "SolveResult", "make_solver", "resolve_config",
           "per_sample_dot", "reference_gradient"]
