"""The influence engine: v, s_test and per-item scores I(z) = -g_z·s_test, task- and model-agnostic.

Sign convention (stated once, tested): ``score(z) = -g_zᵀ s`` with ``s ≈ (H + λI)⁻¹ v``, ``v = Σ_{r∈R} ∇l(r)``,
``g_z = ∇l(z, ŷ_z)`` (the pseudo-label) and H the Hessian of the mean labeled loss, so **lower is better to
label**. What the number means: the first-order (influence-function) prediction for up-weighting z
infinitesimally. If z joined the labeled objective with weight ε relative to one labeled item,
``(1/|L|) (Σ_{i∈L} l_i(θ) + ε l(z, ŷ_z; θ)) + (λ/2)‖θ‖²``, re-minimised to θ̂(ε), then
``score(z) = |L| · dL(R)/dε`` at ε = 0, L(R) being the summed reference loss at θ̂(ε) (exact when λ is the
model's own L2 term and θ̂ a minimum; with λ a damping it is the damped approximation). Adding a whole item
(ε = 1) changes L(R) only approximately by ``score / |L|``: the response is not linear in ε. On the
logistic regression of tests/test_isal_sign.py (float64, retrained to convergence) the actual change was about
0.46 × score/|L| at ε = 1, 0.87 × at ε = 0.1 and 0.98 × at ε = 0.01, with a correlation of 0.98 across items at
ε = 1 (so rankings hold). For the paper's LiSSA preset s carries a factor ``scale`` and λ = d·scale.

The engine asks the task (``task.influence_hooks()``) for what only the task knows (the meaning of ``auto`` and
``last``, a closed-form g·s, an exact Hessian on a scope, fused pseudo-targets, the preferred memory layout) and
otherwise takes its generic paths; it never tests what kind of task it was given.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..core import dist
from ..core.errors import ConfigError
from ..core.faults import fault_point
from ..core.progress import progress_bar
from ..core.torch_utils import eval_mode
from ..settings import InfluenceConfig
from .grads import choose_method, per_sample_dot, per_sample_grads, reference_gradient, release_perturbed
from .hvp import HessianOperator, ShardedHessian
from .kfac import KroneckerCurvature, layer_blocks
from .layout import channels_last, wants_channels_last
from .params import ParamScope
from .solvers import SolveResult, make_solver

#: the solve's info copied into the round's selection summary (where the solver reports them)
SUMMARY_KEYS = ("iterations", "final_residual", "estimated_error", "converged", "diverged", "depth_capped",
                "damping_raised", "requested_damping")


def _finite_or_none(value: float) -> float | None:
    """State files are strict JSON: an infinite damping (s = v) is recorded as null."""
    return value if math.isfinite(value) else None


@dataclass
class InfluenceResult:
    ids: np.ndarray
    scores: np.ndarray
    solve: SolveResult
    timings: dict[str, float] = field(default_factory=dict)
    method: str = ""
    scope: str = ""

    def summary(self) -> dict[str, Any]:
        """What the round records of the solve: the solver, the damping it effectively used (resolved: ``auto``
        never appears, and lissa-auto's raised damping is the one shown), and whether it converged (every solver
        reports ``converged``; a solver that did not also warned), with its residual or error estimate."""
        info = self.solve.info
        picked = {}
        for k in SUMMARY_KEYS:
            if k in info:
                value = info[k]
                picked[k] = _finite_or_none(float(value)) if isinstance(value, float) else value
        return {"scored": int(len(self.scores)), "solver": self.solve.solver,
                "effective_damping": _finite_or_none(self.solve.effective_damping),
                "gs_method": self.method, "scope": self.scope, **picked}


def hooks_of(task) -> Any:
    """The task's influence hooks (:meth:`~influal.api.Task.influence_hooks`), or None."""
    return task.influence_hooks()


def resolve_config(cfg: InfluenceConfig, model: nn.Module, task, scope=None) -> InfluenceConfig:
    """Replace ``auto`` settings with what the task says: ``scope="auto"`` is the task's scope (a classifier with a
    final nn.Linear: ``last``), else the weight tensors; ``solver="auto"`` is CG on the task's scope where the task
    says its loss is convex there, else the paper's LiSSA. See :class:`~influal.settings.InfluenceConfig`."""
    hooks = hooks_of(task)
    task_scope = hooks.auto_scope(model) if hooks is not None else None
    changes = {}
    if cfg.scope == "auto" and scope is None:
        changes["scope"] = task_scope or "weights"
    if cfg.solver == "auto":
        convex = False
        resolved = changes.get("scope", cfg.scope)
        if scope is None and hooks is not None and task_scope is not None and resolved == task_scope:
            try:
                convex = hooks.convex_scope(model, ParamScope(model, resolved, hooks))
            except ConfigError:
                convex = False
        changes["solver"] = "cg" if convex else "lissa"
    return replace(cfg, **changes) if changes else cfg


class InfluenceEngine:
    """Computes ISAL's pieces for one trained model; each piece can be called (and timed) on its own."""

    def __init__(self, model: nn.Module, task, cfg: InfluenceConfig, scope: str | Sequence[str] | None = None):
        self.model, self.task = model, task
        self.hooks = hooks_of(task)
        self.cfg = cfg = resolve_config(cfg, model, task, scope)
        self.scope = ParamScope(model, cfg.scope if scope is None else scope, self.hooks)
        self.method = choose_method(cfg.gs_method, model, task, self.scope, self.hooks)
        if cfg.solver in ("ekfac", "kfac"):  # what K-FAC cannot serve fails here, before any pass
            if self.hooks is not None and not self.hooks.layers_are_modules:
                raise ConfigError(f"solvers kfac / ekfac read each layer's inputs and output gradients from its "
                                  f"module's forward, and {type(task).__name__}'s loss applies its layers otherwise; "
                                  f"use solver cg, lissa or lissa-auto")
            layer_blocks(model, self.scope)

    @property
    def effective_damping(self) -> float:
        """The λ the resolved solver targets (``self.cfg`` has ``auto`` resolved). lissa-auto may raise it at solve
        time where the Hessian has negative curvature: ``SolveResult.effective_damping`` is the one used."""
        return self.cfg.effective_damping

    @contextmanager
    def _pass(self):
        """Eval mode and the configured memory layout, for the passes over data (v and the pool)."""
        prefers = self.hooks is not None and self.hooks.prefers_channels_last
        relayout = wants_channels_last(self.model, self.cfg.memory_format, prefers)
        with eval_mode(self.model), channels_last(self.model, relayout):
            yield

    def reference_gradient(self, dataset, ids) -> torch.Tensor:
        """v = Σ_r ∇l(r); under torch.distributed each rank sums its shard of the reference set, then all-reduce."""
        ids = dist.shard(np.asarray(ids))
        with self._pass():
            v = reference_gradient(self.model, self.task, self.task.batches(dataset, ids, self.cfg.batch_size),
                                   self.scope)
        return dist.all_sum(v)

    def hessian(self, dataset, labeled_ids, *, sharded: bool | None = None):
        """The Hessian of the mean labeled loss on the scope: the task's own operator where it offers one (a
        classifier's last layer from cached features: exact and cheap), else by double backward through the
        model. Under torch.distributed (``sharded``, the default there) each rank builds it on its shard of the
        labeled set and its full products and dense form are all-reduced (:class:`ShardedHessian`)."""
        labeled_ids = np.asarray(labeled_ids, dtype=np.int64)
        if sharded is None:
            sharded = dist.active()
        if sharded and dist.active():
            local = self.hessian(dataset, dist.shard(labeled_ids), sharded=False)
            return ShardedHessian(local, len(dist.shard(labeled_ids)), len(labeled_ids))
        if self.hooks is not None:
            with eval_mode(self.model):
                op = self.hooks.hessian(self.model, dataset, np.asarray(labeled_ids, dtype=np.int64), self.scope,
                                        self.cfg.batch_size)
            if op is not None:
                return op
        return HessianOperator(self.model, self.task, dataset, labeled_ids, self.scope, self.cfg.batch_size)

    def solve(self, v: torch.Tensor, dataset, labeled_ids, generator: torch.Generator, solver=None) -> SolveResult:
        """s ≈ (H + λI)⁻¹ v. Under torch.distributed, CG and the exact solve use the all-reduced Hessian of
        :meth:`hessian`; LiSSA's chains run on the whole labeled set, spread over the ranks (chain k on rank
        k mod N, from the generator state it has in one process) and averaged: the same s as one process."""
        solver = make_solver(self.cfg) if solver is None else solver
        stochastic = getattr(solver, "stochastic", False)
        with eval_mode(self.model):
            if getattr(solver, "kronecker", False):
                op = KroneckerCurvature(self.model, self.task, self.scope, self.hooks,
                                        eigen_correction=solver.eigen_correction)
                op.fit(dataset, np.asarray(labeled_ids, dtype=np.int64), self.cfg.batch_size, generator)  # shards itself
            elif getattr(solver, "needs_hessian", True):
                op = self.hessian(dataset, labeled_ids, sharded=not stochastic)
            else:
                op = None
            return solver.solve(op, v, generator)

    def dots(self, dataset, ids, s: torch.Tensor, *, targets: str = "pseudo", method: str | None = None,
             progress: bool = False) -> np.ndarray:
        """g_z·s for every id (targets: the model's ``pseudo`` labels or the ``true`` ones). Under torch.distributed
        each rank scores its shard of ``ids`` and the scores are gathered back into the order of ``ids``."""
        count = len(ids)
        ids = dist.shard(np.asarray(ids))
        method = self.method if method is None else method
        fuse = self.hooks is not None and self.hooks.fuses_pseudo_targets
        # One preallocated result: small per-batch tensors kept to the end would sit between the freed batch
        # buffers and keep the allocator from reusing them (resident memory then grew with the pool).
        out = np.empty(len(ids), dtype=np.float64)
        filled = 0
        with self._pass():
            batches = self.task.batches(dataset, ids, self.cfg.batch_size)
            total = -(-len(ids) // self.cfg.batch_size)
            try:
                for _, x, y in progress_bar(batches, total=total, desc="scoring", enabled=progress):
                    fault_point("scoring")
                    if targets == "pseudo":  # None lets a task fuse the pseudo-targets into the scoring pass
                        y = None if fuse else self.task.pseudo_targets(self.model, x)
                    dots = per_sample_dot(self.model, self.task, x, y, self.scope, s, method, self.hooks).detach()
                    out[filled:filled + len(dots)] = dots.cpu().numpy()
                    filled += len(dots)
            finally:
                release_perturbed()  # ``fd`` keeps θ ± h s for the pass's batches
        return dist.gather_rows(out, count)

    def gradients(self, dataset, ids, *, targets: str = "pseudo", progress: bool = False) -> torch.Tensor:
        """Every item's flat gradient on the scope [len(ids), d] (float32 on the CPU), at the model's ``pseudo``
        labels or the ``true`` ones: the task's closed form where it has one, else one backward per item. Memory
        is len(ids) x d floats: for small scopes (a classifier's last layer)."""
        out = torch.empty((len(ids), self.scope.numel), dtype=torch.float32)
        filled = 0
        fuse = self.hooks is not None and self.hooks.fuses_pseudo_targets
        with self._pass():
            batches = self.task.batches(dataset, np.asarray(ids), self.cfg.batch_size)
            total = -(-len(ids) // self.cfg.batch_size)
            for _, x, y in progress_bar(batches, total=total, desc="gradients", enabled=progress):
                if targets == "pseudo":
                    y = None if fuse else self.task.pseudo_targets(self.model, x)
                rows = per_sample_grads(self.model, self.task, x, y, self.scope, self.hooks)
                out[filled:filled + len(rows)] = rows.float().cpu()
                filled += len(rows)
        return out

    def run(self, pool, labeled_ids, unlabeled_ids, reference, reference_ids, generator: torch.Generator,
            progress: bool = False) -> InfluenceResult:
        """The whole ISAL scoring pass: v on the reference set, s_test on the labeled set, scores on the pool."""
        timings = {}
        t0 = time.perf_counter()
        v = self.reference_gradient(reference, reference_ids)
        timings["v_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        solved = self.solve(v, pool, labeled_ids, generator)
        timings["s_test_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scores = -self.dots(pool, unlabeled_ids, solved.s, progress=progress)
        timings["scoring_s"] = time.perf_counter() - t0
        scope = self.cfg.scope if isinstance(self.cfg.scope, str) else "custom"
        return InfluenceResult(np.asarray(unlabeled_ids), scores, solved, timings, self.method, scope)
