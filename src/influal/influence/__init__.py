"""The influence engine: parameter scopes, gradients, Hessian-vector products, solvers, scores.

It knows nothing about images or boxes: it talks to models only through a Task.
"""

from .grads import per_sample_dot, reference_gradient
from .hvp import HessianOperator
from .params import ParamScope
from .score import InfluenceEngine, InfluenceResult
from .solvers import AutoLiSSA, ConjugateGradient, ExactSolver, IdentitySolver, LiSSA, SolveResult, make_solver

__all__ = ["AutoLiSSA", "ConjugateGradient", "ExactSolver", "HessianOperator", "IdentitySolver",
           "InfluenceEngine", "InfluenceResult", "LiSSA", "ParamScope", "SolveResult", "make_solver",
           "per_sample_dot", "reference_gradient"]
