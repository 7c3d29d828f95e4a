"""Self-check: how close each solver's s_test is to the exact solve, and what that does to the ranking.

Runs on the last-layer scope (small enough for a dense Hessian) of a real trained model. For every solver it
reports the relative error and cosine of s against the exact ``(H + λI)⁻¹ v`` (LiSSA's paper preset is
compared after removing its ``scale`` factor), the
Spearman correlation of the induced pool scores, the overlap of the selected top-B, and whether the solver itself
reported convergence (``converged`` in its info: a solver that says it did not is flagged in the line, whatever
the comparison found).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..settings import InfluenceConfig
from .engine import InfluenceEngine
from .solvers import ExactSolver, make_solver

DEFAULT_SOLVERS: dict[str, InfluenceConfig] = {
    "cg": InfluenceConfig(scope="last", solver="cg", damping=0.01, cg_max_iter=300, cg_tol=1e-8),
    "lissa-auto": InfluenceConfig(scope="last", solver="lissa-auto", damping=0.01, hvp_batch_size=256),
    "lissa-paper": InfluenceConfig(scope="last", solver="lissa", damping=0.01, scale=1e4, lissa_depth=250,
                                   lissa_repeats=4, hvp_batch_size=1, on_divergence="warn"),
    "identity": InfluenceConfig(scope="last", solver="identity"),
}


@dataclass
class SolverCheck:
    name: str
    relative_error: float
    cosine: float
    spearman: float
    top_overlap: float
    effective_damping: float
    seconds: float
    verdict: str
    converged: bool | None = None  # the solver's own report (None: a solver object that reports none)

    def line(self, budget: int) -> str:
        flag = {True: "", False: ", did not converge", None: ", convergence not reported"}[self.converged]
        return (f"{self.name:>12}: rel. error {self.relative_error:.2e}, cosine {self.cosine:.4f}, "
                f"Spearman {self.spearman:.4f}, top-{budget} overlap {self.top_overlap:.0%} "
                f"(λ_eff {self.effective_damping:g}, {self.seconds:.2f}s{flag}) -> {self.verdict}")

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON fields (an infinite damping, s = v, becomes null)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in self.__dict__.items()}


def verdict(cosine: float, spearman: float, overlap: float) -> str:
    """'accurate' if the solve and the selection match the exact one; 'ranking-equivalent' if the selection
    does although s differs; 'approximate' if the ranking is close; else 'unreliable'."""
    if cosine >= 0.999 and overlap >= 0.95:
        return "accurate"
    if spearman >= 0.98 and overlap >= 0.9:
        return "ranking-equivalent"
    if spearman >= 0.9 and overlap >= 0.7:
        return "approximate"
    return "unreliable"


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _overlap(a: np.ndarray, b: np.ndarray, budget: int) -> float:
    top_a = set(np.argsort(a, kind="stable")[:budget].tolist())
    top_b = set(np.argsort(b, kind="stable")[:budget].tolist())
    return len(top_a & top_b) / budget


def check_solvers(model, task, pool, labeled_ids, unlabeled_ids, reference, reference_ids, *, budget: int,
                  solvers: dict[str, Any] | None = None, damping: float = 0.01, seed: int = 0
                  ) -> tuple[dict[str, Any], list[SolverCheck]]:
    """Compare solvers with the exact solve on the last-layer scope. ``solvers`` maps a name to an
    InfluenceConfig (its scope is forced to 'last') or to a solver object with ``solve(op, v, generator)``."""
    solvers = DEFAULT_SOLVERS if solvers is None else solvers
    base_cfg = InfluenceConfig(scope="last", solver="exact", damping=damping)
    engine = InfluenceEngine(model, task, base_cfg)
    v = engine.reference_gradient(reference, reference_ids)
    t0 = time.perf_counter()
    exact = engine.solve(v, pool, labeled_ids, torch.Generator().manual_seed(seed), ExactSolver(damping))
    exact_seconds = time.perf_counter() - t0
    exact_scores = -engine.dots(pool, unlabeled_ids, exact.s)
    rows = []
    for name, spec in solvers.items():
        if isinstance(spec, InfluenceConfig):
            spec = replace(spec, scope="last")
            solver = make_solver(spec)
        else:
            solver = spec
        t0 = time.perf_counter()
        result = engine.solve(v, pool, labeled_ids, torch.Generator().manual_seed(seed), solver)
        seconds = time.perf_counter() - t0
        s = result.s
        if getattr(solver, "name", "") == "lissa" and not getattr(solver, "divide_by_scale", True):
            s = s / solver.scale
        scores = -engine.dots(pool, unlabeled_ids, s)
        err = float((s - exact.s).norm() / exact.s.norm())
        cos = float(torch.nn.functional.cosine_similarity(s, exact.s, dim=0))
        rho = _spearman(scores, exact_scores)
        overlap = _overlap(scores, exact_scores, budget)
        converged = result.info.get("converged")
        rows.append(SolverCheck(name, err, cos, rho, overlap, float(result.effective_damping), seconds,
                                verdict(cos, rho, overlap), None if converged is None else bool(converged)))
    header = {"scope": "last", "params": int(engine.scope.numel), "labeled": int(len(labeled_ids)),
              "pool": int(len(unlabeled_ids)), "reference": int(len(reference_ids)), "damping": damping,
              "budget": budget, "exact_seconds": exact_seconds}
    return header, rows
