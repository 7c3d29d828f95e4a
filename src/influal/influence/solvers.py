"""Inverse-Hessian-vector solvers: s ≈ (H + λI)^-1 v, each reporting the λ it effectively uses.

All solvers share one interface, ``solve(op, v, generator) -> SolveResult``, where ``op`` is a
:class:`~influal.influence.hvp.HessianOperator`. None returns an unchecked result: every ``SolveResult.info``
holds a boolean ``converged`` and the measure it rests on (CG: ``relative_residuals`` and ``final_residual``;
the exact solve: ``final_residual``; LiSSA chains: ``relative_step_trace``, ``norm_trace`` and
``estimated_error``, see :func:`_chain_report`). A solve that cannot vouch for its result warns with
:class:`~influal.core.errors.SolverWarning`; one that diverges raises :class:`~influal.core.errors.SolverError`
(or, with ``on_divergence="warn"``, warns and records ``diverged``). ``v = 0`` gives ``s = 0``, converged.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core import dist
from ..core.errors import ConfigError, SolverError, SolverWarning
from ..settings import InfluenceConfig

#: lissa-auto never draws Hessian mini-batches smaller than this (InfluenceConfig.hvp_batch_size's default, 1, is
#: the paper's LiSSA setting: single-sample Hessians exceed the full one's top eigenvalue and break the chain).
AUTO_MIN_HVP_BATCH = 64
#: how often (in steps) a LiSSA chain is checked and traced
CHECK_EVERY = 25
ON_DIVERGENCE = InfluenceConfig.ON_DIVERGENCE


@dataclass
class SolveResult:
    s: torch.Tensor
    solver: str
    effective_damping: float
    info: dict[str, Any] = field(default_factory=dict)


def _check_finite(h: torch.Tensor, solver: str, step: int, hint: str) -> None:
    if not bool(torch.isfinite(h).all()):
        raise SolverError(f"{solver} produced non-finite values at step {step}; {hint}")


def _check_on_divergence(value: str) -> None:
    if value not in ON_DIVERGENCE:
        raise ConfigError(f"on_divergence must be one of {', '.join(ON_DIVERGENCE)}; got {value!r}")


def _zero_solution(v: torch.Tensor, solver: str, damping: float, info: dict[str, Any]) -> SolveResult:
    """v = 0: s = 0 solves (H + λI) s = v exactly, whatever H is."""
    return SolveResult(torch.zeros_like(v), solver, damping,
                       {**info, "converged": True, "final_residual": 0.0, "estimated_error": 0.0, "zero_v": True})


def _partial_sum(rate: float, terms: int) -> float:
    """Σ_{j<terms} rate^j: the bound on ‖h_k‖/‖v‖ of a Neumann chain whose iteration contracts by ``rate``."""
    return (1.0 - rate ** terms) / (1.0 - rate) if rate < 1.0 else float(terms)


def _fmt_trace(trace: list[float], last: int = 8) -> str:
    shown = ", ".join(f"{x:.3g}" for x in trace[-last:])
    return f"[{'…, ' if len(trace) > last else ''}{shown}]"


def _run_chains(name: str, op, v: torch.Tensor, generator: torch.Generator, *, depth: int, repeats: int,
                batch_size: int, update: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rate: float,
                blowup: float, on_divergence: str, finite_hint: str, divergence_hint: Callable[[], str]
                ) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """``repeats`` chains ``h <- update(h, H_B h)`` from ``h = v``, checked every :data:`CHECK_EVERY` steps.

    A chain whose iteration contracts by ``rate`` obeys ‖h_k‖ <= ‖v‖ Σ_{j<=k} rate^j (k steps done); one that grows
    beyond ``blowup`` times that has left its fixed point behind: SolverError, or with ``on_divergence="warn"`` one
    SolverWarning and ``diverged`` in the info (the chain is then continued unchanged). Checking changes no value.
    """
    v_norm = float(v.norm())
    chains: list[torch.Tensor] = []
    step_trace: list[float] = []
    norm_trace: list[float] = []
    diverged_at = None
    # Under torch.distributed chain k runs on rank k mod N; a rank advances the generator through the chains of the
    # others (as their mini-batches would draw), so each chain sees the draws it sees in one process, and the sum
    # over the ranks (the others' chains are zeros) restores every chain bit for bit.
    spread = dist.active() and hasattr(op, "skip_sample")
    for chain in range(repeats):
        if spread and chain % dist.world_size() != dist.rank():
            for _ in range(depth):
                op.skip_sample(generator, batch_size)
            chains.append(torch.zeros_like(v))
            continue
        h = v.clone()
        chain_norms: list[float] = []
        for step in range(depth):
            hv = op.sample(h, generator, batch_size)
            h_new = update(h, hv)
            if step % CHECK_EVERY == CHECK_EVERY - 1 or step == depth - 1:
                _check_finite(h_new, name, step, finite_hint)
                norm = h_new.norm()
                step_trace.append(float((h_new - h).norm() / norm.clamp_min(1e-30)))
                ratio = float(norm) / v_norm
                chain_norms.append(ratio)
                bound = _partial_sum(rate, step + 2)
                if diverged_at is None and ratio > blowup * bound:
                    diverged_at = [chain, step]
                    message = (f"{name} diverged: at step {step} of chain {chain}, ‖h‖ = {ratio:.3g}·‖v‖, above "
                               f"{blowup:g}× the {bound:.3g}·‖v‖ that a chain converging to its fixed point stays "
                               f"under (‖h‖/‖v‖ every {CHECK_EVERY} steps: {_fmt_trace(chain_norms)}); "
                               f"{divergence_hint()}")
                    if on_divergence == "raise":
                        raise SolverError(message + "; on_divergence='warn' keeps such a result instead")
                    warnings.warn(message + "; the result is kept (on_divergence='warn') and is not a solve of "
                                  "(H + λI) s = v", SolverWarning, stacklevel=4)
            h = h_new
        norm_trace.extend(chain_norms)
        chains.append(h)
    if spread:
        chains = list(dist.all_sum(torch.stack(chains)).unbind(0))
    return chains, {"relative_step_trace": step_trace, "norm_trace": norm_trace,
                    "last_relative_step": step_trace[-1] if step_trace else None,
                    "diverged": diverged_at is not None, "diverged_at": diverged_at}


def _chain_report(chains: list[torch.Tensor], trace: dict[str, Any], *, rate: float, depth: int, stochastic: bool,
                  tol: float, noise_tol: float) -> dict[str, Any]:
    """How far the averaged chains may be from their fixed point, and whether that is within tolerance.

    ``bias_bound`` = rate^(depth+1): the part of the slowest mode's fixed point a chain has not reached (exact
    for the full-batch iteration with a PSD Hessian and a large enough scale; the paper preset: 0.99^251 = 8 %).
    For full-batch chains, also the a-posteriori bound rate/(1-rate) × the last relative step. For mini-batch
    chains, ``chain_std_error``: the standard error of the mean of the chains relative to its norm (None with one
    chain). ``converged``: no divergence, the bias within ``tol`` and, for mini-batch chains, the standard error
    within ``noise_tol`` (a single mini-batch chain cannot show that and never reports converged).
    """
    mean = torch.stack(chains).mean(0)
    mean_norm = float(mean.norm())
    bias = rate ** (depth + 1) if rate < 1.0 else 1.0
    last = trace["last_relative_step"]
    if not stochastic and last is not None:
        bias = max(bias, last * rate / (1.0 - rate) if rate < 1.0 else math.inf)
    noise = None
    if len(chains) >= 2:
        spread = sum(float((c - mean).norm()) ** 2 for c in chains)
        noise = math.sqrt(spread / (len(chains) * (len(chains) - 1))) / max(mean_norm, 1e-30)
    converged = (not trace["diverged"] and bias <= tol
                 and (not stochastic or (noise is not None and noise <= noise_tol)))
    estimated = bias + (noise or 0.0) if (noise is not None or not stochastic) else None
    return {"rate": rate, "bias_bound": bias, "chain_std_error": noise, "estimated_error": estimated,
            "stochastic": stochastic, "tol": tol, "noise_tol": noise_tol, "converged": bool(converged)}


def _batch_info(op, batch_size: int) -> tuple[int, bool]:
    """The mini-batch actually drawn (at most the labeled set) and whether the products are random."""
    n = getattr(op, "n", None)
    if n is None:
        return batch_size, True
    return min(batch_size, int(n)), batch_size < int(n)


class LiSSA:
    """The supplement's Algorithm 1 with the official update ``h <- v + (1-d) h - H_B h / scale``.

    ``repeats`` chains of ``depth`` steps, each starting at ``h = v``, are averaged. The fixed point is
    ``scale (H + d·scale I)^-1 v``: the effective damping is ``d·scale``. With ``divide_by_scale=False``
    (the official code) the result keeps the factor ``scale``; rankings do not depend on it.
    Mini-batches are drawn at random from a seeded generator (the official code reads the first labeled
    items in file order). A non-finite value raises instead of silently restarting the chain.

    For a PSD Hessian with ``‖H‖ <= (2-d)·scale`` every step contracts by ``1-d``, so ‖h‖ stays below ‖v‖/d (the
    bound on its fixed point). A chain growing beyond ``blowup`` times that bound diverged: SolverError naming the
    step, the norm trace and the setting to change, or with ``on_divergence="warn"`` (the paper preset) a
    SolverWarning and ``diverged: True`` in the info, the result unchanged. ``converged`` and ``estimated_error``
    are as in :func:`_chain_report`; the paper preset (250 steps at d = 0.01) stops at 92 % of its fixed point
    and reports ``converged: False``.
    """

    name = "lissa"
    stochastic = True  # mini-batch products: under torch.distributed its chains are spread over the ranks

    def __init__(self, damping: float = 0.01, scale: float = 1e4, depth: int = 250, repeats: int = 4,
                 batch_size: int = 1, divide_by_scale: bool = False, *, on_divergence: str = "raise",
                 blowup: float = 10.0, tol: float = 1e-3, noise_tol: float = 5e-2):
        _check_on_divergence(on_divergence)
        self.damping, self.scale, self.depth, self.repeats = damping, scale, depth, repeats
        self.batch_size, self.divide_by_scale = batch_size, divide_by_scale
        self.on_divergence, self.blowup, self.tol, self.noise_tol = on_divergence, blowup, tol, noise_tol

    def _divergence_hint(self) -> str:
        return (f"the Hessian has curvature beyond what scale = {self.scale:g} allows (eigenvalues of the "
                f"mini-batch Hessians above (2-d)·scale = {(2 - self.damping) * self.scale:.3g}, or below "
                f"-d·scale = {-self.damping * self.scale:.3g}): raise the scale (e.g. to {10 * self.scale:g}) or "
                f"the damping d = {self.damping:g}")

    def solve(self, op, v: torch.Tensor, generator: torch.Generator) -> SolveResult:
        batch, stochastic = _batch_info(op, self.batch_size)
        info: dict[str, Any] = {"depth": self.depth, "repeats": self.repeats, "scale": self.scale,
                                "batch_size": batch, "on_divergence": self.on_divergence}
        if not bool((v != 0).any()):
            return _zero_solution(v, self.name, self.damping * self.scale, info)
        d, scale = self.damping, self.scale
        chains, trace = _run_chains(
            self.name, op, v, generator, depth=self.depth, repeats=self.repeats, batch_size=self.batch_size,
            update=lambda h, hv: v + (1.0 - d) * h - hv / scale, rate=1.0 - d, blowup=self.blowup,
            on_divergence=self.on_divergence, finite_hint="raise the scale or the damping",
            divergence_hint=self._divergence_hint)
        s = torch.stack(chains).mean(0)
        if self.divide_by_scale:
            s = s / self.scale
        info.update(trace)
        info.update(_chain_report(chains, trace, rate=1.0 - d, depth=self.depth, stochastic=stochastic,
                                  tol=self.tol, noise_tol=self.noise_tol))
        return SolveResult(s, self.name, self.damping * self.scale, info)


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


def lanczos_extremes(op, dim_like: torch.Tensor, generator: torch.Generator, iters: int = 30
                     ) -> tuple[float, float]:
    """The smallest and largest eigenvalue of H, estimated by ``iters`` Lanczos steps with full-batch products.

    Three-term recurrence without reorthogonalisation (memory: three vectors). The estimates are Ritz values, which
    lie inside [λ_min, λ_max]: both err towards the middle of the spectrum, so callers add a margin.
    """
    q = torch.randn(dim_like.shape, generator=generator, dtype=dim_like.dtype).to(dim_like.device)
    q /= q.norm()
    q_prev = torch.zeros_like(q)
    alphas: list[float] = []
    betas: list[float] = []
    beta = 0.0
    for _ in range(iters):
        w = op.full(q)
        alpha = float(q @ w)
        if not math.isfinite(alpha):
            break
        alphas.append(alpha)
        w = w - alpha * q - beta * q_prev
        beta = float(w.norm())
        if not math.isfinite(beta) or beta <= 1e-7 * max(abs(a) for a in alphas):
            break  # an invariant subspace: the Ritz values are eigenvalues
        betas.append(beta)
        q_prev, q = q, w / beta
    if not alphas:
        raise SolverError("the Hessian-vector product is not finite; the model or the loss is broken here")
    k = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[:k - 1], dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    ritz = torch.linalg.eigvalsh(T)
    return float(ritz[0]), float(ritz[-1])


def minibatch_top(op, dim_like: torch.Tensor, generator: torch.Generator, batch_size: int, draws: int = 8,
                  iters: int = 8) -> float:
    """The largest ‖H_B‖ (largest eigenvalue in magnitude) over ``draws`` random mini-batches B of ``batch_size``
    items, each by ``iters`` power-iteration steps on that one batch (``op.sample`` with a generator seeded alike
    draws the same batch again). Where a few uncertain items carry most of the curvature (a well-fitted network),
    a mini-batch holding one of them has a Hessian many times the full one's, and a LiSSA scale set from the full
    Hessian lets the chain grow. The seeds are drawn from ``generator``."""
    seeds = torch.randint(2 ** 62, (draws,), generator=generator).tolist()
    top = 0.0
    for seed in seeds:
        x = torch.randn(dim_like.shape, generator=torch.Generator().manual_seed(seed), dtype=dim_like.dtype)
        x = x.to(dim_like.device) / x.norm()
        for _ in range(iters):
            y = op.sample(x, torch.Generator().manual_seed(seed), batch_size)
            norm = y.norm()
            if not torch.isfinite(norm) or norm == 0:
                break
            top = max(top, float(norm))  # ‖H_B x‖ for a unit x: a lower bound on ‖H_B‖, tight as x converges
            x = y / norm
    return top


class AutoLiSSA:
    """LiSSA with the scale set from the spectrum and an explicit damping λ: s ≈ (H + λI)^-1 v.

    Lanczos (``power_iters`` full-batch products) estimates the extreme eigenvalues λ_min, λ_max of H. Where H has
    negative curvature below -λ/2 (a non-convex scope: the weight tensors of a network), H + λI is indefinite and
    no LiSSA chain converges; with ``adapt_damping`` the damping is raised to λ + 2|λ_min| (a SolverWarning says
    so, ``damping_raised`` and ``requested_damping`` are in the info and the raised one is the effective damping),
    else SolverError. ``scale = safety · (max(λ_max, ‖H_B‖) + λ)`` makes every mode contract, with ‖H_B‖ the largest
    of ``probe_draws`` random mini-batches' Hessian norms (:func:`minibatch_top`: where a few items carry most of
    the curvature, a mini-batch's Hessian is many times the full one's); the depth is chosen so the slowest
    mode (rate 1 - (λ + min(λ_min, 0))/scale) shrinks by ``tol``. It is capped at ``max_depth``: a capped chain
    warns, reports ``depth_capped`` and ``required_depth`` and does not report converged. Mini-batches have at
    least :data:`AUTO_MIN_HVP_BATCH` items through :func:`make_solver`. The result is divided by the scale.
    Divergence (growth beyond ``blowup`` × the Neumann bound) or NaN raises SolverError (or warns, with
    ``on_divergence="warn"``).
    """

    name = "lissa-auto"

    stochastic = True

    def __init__(self, damping: float = 0.01, repeats: int = 4, batch_size: int = AUTO_MIN_HVP_BATCH,
                 safety: float = 1.5, tol: float = 1e-3, max_depth: int = 2000, power_iters: int = 30,
                 blowup: float = 10.0, *, on_divergence: str = "raise", noise_tol: float = 5e-2,
                 adapt_damping: bool = True, probe_draws: int = 8):
        if damping <= 0:
            raise ConfigError("lissa-auto needs damping > 0 (it sets the convergence rate)")
        _check_on_divergence(on_divergence)
        self.damping, self.repeats, self.batch_size, self.safety = damping, repeats, batch_size, safety
        self.tol, self.max_depth, self.power_iters, self.blowup = tol, max_depth, power_iters, blowup
        self.on_divergence, self.noise_tol, self.adapt_damping = on_divergence, noise_tol, adapt_damping
        self.probe_draws = probe_draws

    def solve(self, op, v: torch.Tensor, generator: torch.Generator) -> SolveResult:
        t0 = time.perf_counter()
        batch, stochastic = _batch_info(op, self.batch_size)
        info: dict[str, Any] = {"repeats": self.repeats, "batch_size": batch, "max_depth": self.max_depth,
                                "requested_damping": self.damping, "on_divergence": self.on_divergence}
        if not bool((v != 0).any()):
            return _zero_solution(v, self.name, self.damping, info)
        lam_min, lam_max = lanczos_extremes(op, v, generator, self.power_iters)
        lam = self.damping
        raised = lam_min < -0.5 * lam
        if raised:
            lam = self.damping + 2.0 * abs(lam_min)
            advice = (f"set the damping above {abs(lam_min):.3g} yourself, or use scope 'last' (convex for a "
                      "classifier) or solver 'lissa' (the paper's, heavily damped)")
            if not self.adapt_damping:
                raise SolverError(f"lissa-auto: the Hessian has negative curvature (smallest eigenvalue ≈ "
                                  f"{lam_min:.3g}), so H + λI with λ = {self.damping:g} is indefinite and no LiSSA "
                                  f"chain converges; {advice}")
            warnings.warn(f"lissa-auto: the Hessian on this scope has negative curvature (smallest eigenvalue ≈ "
                          f"{lam_min:.3g} by Lanczos), so H + λI with λ = {self.damping:g} is indefinite and no "
                          f"LiSSA chain converges; it solved (H + {lam:.3g} I) s = v instead (the reported "
                          f"effective damping); {advice}", SolverWarning, stacklevel=3)
        slowest = lam + min(lam_min, 0.0)  # the smallest eigenvalue of H + λI, by the estimate
        batch_top = minibatch_top(op, v, generator, batch, self.probe_draws) \
            if stochastic and self.probe_draws else None
        scale = self.safety * (max(lam_max, batch_top or 0.0) + lam)
        rate = 1.0 - slowest / scale
        required = max(1, math.ceil(math.log(self.tol) / math.log(rate)))
        depth = min(self.max_depth, required)
        capped = required > self.max_depth
        if capped:
            warnings.warn(f"lissa-auto needs {required} steps per chain to reach tol = {self.tol:g} (condition "
                          f"number (λ_max + λ)/λ ≈ {(lam_max + lam) / slowest:.3g}: λ_max ≈ {lam_max:.3g}, λ = "
                          f"{lam:.3g}) but is capped at max_depth = {self.max_depth}: the slowest modes reach only "
                          f"{1 - rate ** (depth + 1):.0%} of their fixed point; raise the damping, or use solver "
                          "'cg' (deterministic, about √κ iterations)", SolverWarning, stacklevel=3)

        def hint() -> str:
            probed = "" if batch_top is None else f", the largest of {self.probe_draws} probed mini-batches' ≈ " \
                f"{batch_top:.3g}"
            return (f"the mini-batch Hessians exceed the top eigenvalue estimated on the labeled set (λ_max ≈ "
                    f"{lam_max:.3g}{probed}, scale {scale:.3g}) or have negative curvature beyond -{lam:.3g}: raise "
                    "the HVP batch size or the damping")

        chains, trace = _run_chains(
            self.name, op, v, generator, depth=depth, repeats=self.repeats, batch_size=self.batch_size,
            update=lambda h, hv: v + h - (hv + lam * h) / scale, rate=rate, blowup=self.blowup,
            on_divergence=self.on_divergence, finite_hint="increase the damping or the HVP batch size",
            divergence_hint=hint)
        s = torch.stack(chains).mean(0) / scale
        info.update({"lambda_max": lam_max, "lambda_min": lam_min, "minibatch_top": batch_top, "scale": scale,
                     "depth": depth,
                     "required_depth": required, "depth_capped": capped, "damping_raised": raised})
        info.update(trace)
        info.update(_chain_report(chains, trace, rate=rate, depth=depth, stochastic=stochastic, tol=self.tol,
                                  noise_tol=self.noise_tol))
        if capped:
            info["converged"] = False
        info["seconds"] = time.perf_counter() - t0
        return SolveResult(s, self.name, lam, info)


class ConjugateGradient:
    """Conjugate gradient on (H + λI) x = v with full-batch products over the labeled set.

    Stopping at ``max_iter`` with the relative residual above ``tol`` warns (SolverWarning) and records
    ``converged: False``. A direction of non-positive curvature raises SolverError (H + λI is not positive definite).
    """

    name = "cg"

    def __init__(self, damping: float = 0.01, max_iter: int = 100, tol: float = 1e-6):
        self.damping, self.max_iter, self.tol = damping, max_iter, tol

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        x = torch.zeros_like(v)
        r = v.clone()
        p = r.clone()
        rs = float(r @ r)
        v_norm = math.sqrt(rs)
        if v_norm == 0:
            return SolveResult(x, self.name, self.damping, {"iterations": 0, "final_residual": 0.0,
                                                            "converged": True, "relative_residuals": [0.0],
                                                            "zero_v": True})
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
        converged = residuals[-1] < self.tol
        if not converged:
            warnings.warn(f"cg stopped after {it} iterations with relative residual {residuals[-1]:.3g}, above "
                          f"cg_tol = {self.tol:g}: s is not (H + λI)⁻¹ v to that tolerance; raise cg_max_iter, or "
                          f"the damping (λ = {self.damping:g}, which bounds the conditioning)", SolverWarning,
                          stacklevel=3)
        return SolveResult(x, self.name, self.damping, {"iterations": it, "final_residual": residuals[-1],
                                                        "converged": converged, "relative_residuals": residuals})


class ExactSolver:
    """Dense Hessian of the scope plus λI, solved by Cholesky. For scopes up to ``max_params`` parameters.

    Reports ``final_residual`` = ‖(H + λI) s - v‖ / ‖v‖ of the float64 solve; ``converged`` if it is below ``tol``.
    """

    name = "exact"

    def __init__(self, damping: float = 0.01, max_params: int = 20_000, tol: float = 1e-6):
        self.damping, self.max_params, self.tol = damping, max_params, tol

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        p = v.numel()
        if p > self.max_params:
            raise ConfigError(f"the exact solver builds a {p}x{p} Hessian; that is above exact_max_params="
                              f"{self.max_params}: use scope 'last' or the cg / lissa solver")
        if not bool((v != 0).any()):
            return _zero_solution(v, self.name, self.damping, {"params": p})
        A = op.dense().double()
        A += self.damping * torch.eye(p, dtype=A.dtype, device=A.device)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            eig_min = float(torch.linalg.eigvalsh(A)[0])
            raise SolverError(f"H + λI is not positive definite (smallest eigenvalue {eig_min:.3g}); "
                              f"raise the damping above {max(0.0, -eig_min + self.damping):.3g}")
        v64 = v.double()
        s64 = torch.cholesky_solve(v64.unsqueeze(1), L).squeeze(1)
        residual = float((A @ s64 - v64).norm() / v64.norm())
        converged = math.isfinite(residual) and residual < self.tol
        if not converged:
            warnings.warn(f"the exact solve left a relative residual {residual:.3g} (above {self.tol:g}): H + λI is "
                          f"nearly singular at λ = {self.damping:g}; raise the damping", SolverWarning, stacklevel=3)
        return SolveResult(s64.to(v.dtype), self.name, self.damping,
                           {"params": p, "final_residual": residual, "converged": converged})


class IdentitySolver:
    """s = v: the official code's "gradient similarity" ablation (what heavy damping reduces ISAL to).

    It is exact for what it claims (the limit λ → ∞ of λ (H + λI)^-1 v): ``converged: True``, residual 0.
    """

    name = "identity"
    needs_hessian = False  # the engine does not build the operator for it (a cached-feature pass on the last layer)

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        return SolveResult(v.clone(), self.name, math.inf, {"converged": True, "final_residual": 0.0})


class KroneckerSolver:
    """(C + λI)⁻¹ v with C the block-diagonal Kronecker-factored curvature of the scope's nn.Linear / nn.Conv2d
    layers (:mod:`influal.influence.kfac`): ``ekfac`` (eigenvalues corrected by a second pass over the labeled
    set) or ``kfac``. The engine fits C (``op`` is a :class:`~influal.influence.kfac.KroneckerCurvature`); the
    solve itself is closed form, so ``converged`` is True with the residual measured against C. C approximates the
    Gauss-Newton matrix, not H: ``approximate_curvature`` is True in the info.
    """

    needs_hessian = False
    kronecker = True

    def __init__(self, damping: float = 0.01, eigen_correction: bool = True):
        if damping <= 0:
            raise ConfigError("solvers kfac / ekfac need a damping above 0 (their curvature is only positive "
                              "semi-definite)")
        self.damping, self.eigen_correction = damping, eigen_correction
        self.name = "ekfac" if eigen_correction else "kfac"

    def solve(self, op, v: torch.Tensor, generator: torch.Generator | None = None) -> SolveResult:
        info = {**op.info(), "approximate_curvature": True}
        if not bool((v != 0).any()):
            return _zero_solution(v, self.name, self.damping, info)
        s = op.solve(v, self.damping)
        residual = float((op.product(s) + self.damping * s - v).norm() / v.norm())
        converged = residual < 1e-4
        if not converged:
            warnings.warn(f"{self.name}'s closed-form solve left a relative residual {residual:.3g}: its curvature is "
                          f"badly conditioned at λ = {self.damping:g} in this precision; raise the damping",
                          SolverWarning, stacklevel=3)
        return SolveResult(s, self.name, self.damping, {**info, "final_residual": residual, "converged": converged})


def make_solver(cfg: InfluenceConfig):
    """The solver an :class:`InfluenceConfig` names (resolve ``solver="auto"`` first:
    :func:`influal.influence.engine.resolve_config`). ``lissa-auto`` draws mini-batches of at least
    :data:`AUTO_MIN_HVP_BATCH` items whatever ``hvp_batch_size`` says (its default, 1, is the paper's LiSSA)."""
    if cfg.solver == "lissa":
        return LiSSA(cfg.damping, cfg.scale, cfg.lissa_depth, cfg.lissa_repeats, cfg.hvp_batch_size,
                     on_divergence=cfg.on_divergence)
    if cfg.solver == "lissa-auto":
        return AutoLiSSA(cfg.damping, cfg.lissa_repeats, max(cfg.hvp_batch_size, AUTO_MIN_HVP_BATCH),
                         on_divergence=cfg.on_divergence)
    if cfg.solver == "cg":
        return ConjugateGradient(cfg.damping, cfg.cg_max_iter, cfg.cg_tol)
    if cfg.solver == "exact":
        return ExactSolver(cfg.damping, cfg.exact_max_params)
    if cfg.solver == "identity":
        return IdentitySolver()
    if cfg.solver in ("ekfac", "kfac"):
        return KroneckerSolver(cfg.damping, eigen_correction=cfg.solver == "ekfac")
    if cfg.solver == "auto":
        raise ConfigError("solver 'auto' is resolved by the task: resolve the config first with "
                          "influal.influence.engine.resolve_config(cfg, model, task)")
    raise ConfigError(f"unknown solver {cfg.solver!r}")
