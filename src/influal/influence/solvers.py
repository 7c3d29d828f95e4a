"""Inverse-Hessian-vector solvers: s ≈ (H + λI)^-1 v, each reporting the λ it effectively uses.

All solvers share one interface, ``solve(op, v, generator) -> SolveResult``, where ``op`` is a
:class:`~influal.influence.hvp.HessianOperator`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.errors import ConfigError, SolverError
from ..settings import InfluenceConfig


@dataclass
class SolveResult:
    s: torch.Tensor
    solver: str
    effective_damping: float
    info: dict[str, Any] = field(default_factory=dict)


def _check_finite(h: torch.Tensor, solver: str, step: int, hint: str) -> None:
    if not bool(torch.isfinite(h).all()):
        raise SolverError(f"{solver} produced non-finite values at step {step}; {hint}")


class LiSSA:
    """The supplement's Algorithm 1 with the official update ``h <- v + (1-d) h - H_B h / scale``.

    ``repeats`` chains of ``depth`` steps, each starting at ``h = v``, are averaged. The fixed point is
    ``scale (H + d·scale I)^-1 v``: the effective damping is ``d·scale``. With ``divide_by_scale=False``
    (the official code) the result keeps the factor ``scale``; rankings do not depend on it.
    Mini-batches are drawn at random from a seeded generator (the official code reads the first labeled
    items in file order). A non-finite value raises instead of silently restarting the chain.
    """

    name = "lissa"

    def __init__(self, damping: float = 0.01, scale: float = 1e4, depth: int = 250, repeats: int = 4,
                 batch_size: int = 1, divide_by_scale: bool = False):
        self.damping, self.scale, self.depth, self.repeats = damping, scale, depth, repeats
        self.batch_size, self.divide_by_scale = batch_size, divide_by_scale

    def solve(self, op, v: torch.Tensor, generator: torch.Generator) -> SolveResult:
        chains = []
        trace = []
        for _ in range(self.repeats):
            h = v.clone()
            for step in range(self.depth):
                hv = op.sample(h, generator, self.batch_size)
                h_new = v + (1.0 - self.damping) * h - hv / self.scale
                if step % 25 == 24 or step == self.depth - 1:
                    _check_finite(h_new, self.name, step, "raise the scale or the damping")
                    trace.append(float((h_new - h).norm() / h_new.norm().clamp_min(1e-30)))
                h = h_new
            chains.append(h)
        s = torch.stack(chains).mean(0)
        if self.divide_by_scale:
            s = s / self.scale
        return SolveResult(s, self.name, self.damping * self.scale,
                           {"depth": self.depth, "repeats": self.repeats, "scale": self.scale,
                            "relative_step_trace": trace})


def power_iteration(op, dim_like: torch.Tensor, generator: torch.Generator, iters: int = 20) -> float:
    """Estimate the largest eigenvalue (in magnitude) of H with full-batch products."""
    x = torch.randn(dim_like.shape, generator=generator, dtype=dim_like.dtype).to(dim_like.device)
    x /= x.norm()
    value = 0.0
    for _ in range(iters):
        y = op.full(x)
        value = float(x @ y)
        norm = y.norm()
        if not torch.isfinite(norm) or norm == 0:
            break
        x = y / norm
    return abs(value)


class AutoLiSSA:
    """LiSSA with the scale set from the top eigenvalue and an explicit damping λ: s ≈ (H + λI)^-1 v.

    ``scale = safety · (λ_max + λ)`` makes every mode contract; the depth is chosen so the slowest mode
    (eigenvalue ≈ 0, rate 1 - λ/scale) shrinks by ``tol``, capped at ``max_depth``. The result is divided
    by the scale. Divergence (growth beyond ``blowup`` × the Neumann bound) or NaN raises SolverError.
    """

    name = "lissa-auto"

    def __init__(self, damping: float = 0.01, repeats: int = 4, batch_size: int = 64, safety: float = 1.5,
                 tol: float = 1e-3, max_depth: int = 2000, power_iters: int = 20, blowup: float = 10.0):
        if damping <= 0:
            raise ConfigError("lissa-auto needs damping > 0 (it sets the convergence rate)")
        self.damping, self.repeats, self.batch_size, self.safety = damping, repeats, batch_size, safety
        self.tol, self.max_depth, self.power_iters, self.blowup = tol, max_depth, power_iters, blowup

    def solve(self, op, v: torch.Tensor, generator: torch.Generator) -> SolveResult:
        t0 = time.perf_counter()
        lam_max = power_iteration(op, v, generator, self.power_iters)
        scale = self.safety * (lam_max + self.damping)
        rate = 1.0 - self.damping / scale
        depth = min(self.max_depth, max(1, math.ceil(math.log(self.tol) / math.log(rate))))
        bound = self.blowup * v.norm() / (self.damping / scale)  # ‖Σ_k (I - A/scale)^k v‖ <= ‖v‖·scale/λ
        chains, trace = [], []
        for _ in range(self.repeats):
            h = v.clone()
            for step in range(depth):
                hv = op.sample(h, generator, self.batch_size)
                h_new = v + h - (hv + self.damping * h) / scale
                if step % 25 == 24 or step == depth - 1:
                    _check_finite(h_new, self.name, step, "increase the damping or the HVP batch size")
                    norm = h_new.norm()
                    if norm > bound:
                        raise SolverError(f"lissa-auto diverged at step {step} (|h| = {float(norm):.3g} > "
                                          f"{float(bound):.3g}); the mini-batch Hessian exceeds the estimated top "
                                          "eigenvalue: raise hvp_batch_size or the damping")
                    trace.append(float((h_new - h).norm() / norm.clamp_min(1e-30)))
                h = h_new
            chains.append(h)
        s = torch.stack(chains).mean(0) / scale
        return SolveResult(s, self.name, self.damping,
                           {"lambda_max": lam_max, "scale": scale, "depth": depth, "repeats": self.repeats,
                            "relative_step_trace": trace, "seconds": time.perf_counter() - t0})


class ConjugateGradient:
    """Conjugate gradient on (H + λI) x = v with full-batch products over the labeled set."""

    name = "cg"

    def __init__(self, damping: float = 0.01, max_iter: int = 100, tol: float = 1e-6):
        self.damping, self.max_iter, self.tol = damping, max_iter, tol

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        x = torch.zeros_like(v)
        r = v.clone()
        p = r.clone()
        rs = float(r @ r)
        v_norm = math.sqrt(rs)
        residuals = [1.0]
        it = 0
        for it in range(1, self.max_iter + 1):
            ap = op.full(p) + self.damping * p
            pap = float(p @ ap)
            if not math.isfinite(pap) or pap <= 0:
                raise SolverError(f"cg met a direction of non-positive curvature (pᵀ(H+λI)p = {pap:.3g}) at "
                                  f"iteration {it}: H + λI is not positive definite here; raise the damping")
            alpha = rs / pap
            x += alpha * p
            r -= alpha * ap
            rs_new = float(r @ r)
            residuals.append(math.sqrt(rs_new) / v_norm)
            if residuals[-1] < self.tol:
                break
            p = r + (rs_new / rs) * p
            rs = rs_new
        return SolveResult(x, self.name, self.damping, {"iterations": it, "final_residual": residuals[-1],
                                                        "converged": residuals[-1] < self.tol,
                                                        "relative_residuals": residuals})


class ExactSolver:
    """Dense Hessian of the scope plus λI, solved by Cholesky. For scopes up to ``max_params`` parameters."""

    name = "exact"

    def __init__(self, damping: float = 0.01, max_params: int = 20_000):
        self.damping, self.max_params = damping, max_params

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        p = v.numel()
        if p > self.max_params:
            raise ConfigError(f"the exact solver builds a {p}x{p} Hessian; that is above exact_max_params="
                              f"{self.max_params}: use scope 'last' or the cg / lissa solver")
        A = op.dense().double()
        A += self.damping * torch.eye(p, dtype=A.dtype, device=A.device)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            eig_min = float(torch.linalg.eigvalsh(A)[0])
            raise SolverError(f"H + λI is not positive definite (smallest eigenvalue {eig_min:.3g}); "
                              f"raise the damping above {max(0.0, -eig_min + self.damping):.3g}")
        s = torch.cholesky_solve(v.double().unsqueeze(1), L).squeeze(1).to(v.dtype)
        return SolveResult(s, self.name, self.damping, {"params": p})


class IdentitySolver:
    """s = v: the official code's "gradient similarity" ablation (what heavy damping reduces ISAL to)."""

    name = "identity"

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        return SolveResult(v.clone(), self.name, math.inf, {})


def make_solver(cfg: InfluenceConfig):
    """The solver an :class:`InfluenceConfig` names."""
    if cfg.solver == "lissa":
        return LiSSA(cfg.damping, cfg.scale, cfg.lissa_depth, cfg.lissa_repeats, cfg.hvp_batch_size)
    if cfg.solver == "lissa-auto":
        return AutoLiSSA(cfg.damping, cfg.lissa_repeats, cfg.hvp_batch_size)
    if cfg.solver == "cg":
        return ConjugateGradient(cfg.damping, cfg.cg_max_iter, cfg.cg_tol)
    if cfg.solver == "exact":
        return ExactSolver(cfg.damping, cfg.exact_max_params)
    if cfg.solver == "identity":
        return IdentitySolver()
    raise ConfigError(f"unknown solver {cfg.solver!r}")
