"""Batch-aware ISAL: the batch whose addition is predicted to lower the reference loss most, built greedily.

ISAL's score of one item is the first-order change of the reference loss if that item (with its pseudo-label)
joined the labeled set; its top ``B`` are chosen one by one, so they repeat each other (the same confusion, the
same class: measured on mnist5k-bench, docs/benchmarks.md). This strategy values the batch as a whole:
:func:`influal.influence.greedy.greedy_batch` maximises ``F(S) = vᵀ (A + Σ_S g gᵀ)⁻¹ Σ_S g``, the predicted decrease
of the summed reference loss after one Newton step on the labeled set plus S, where each picked item brings its
own (rank-one, pseudo-label) curvature. One Sherman–Morrison update per pick; every pick and gain is checked
against re-solving from scratch in tests/test_greedy_influence.py.

Measured on mnist5k-bench (docs/benchmarks.md, "Influence variants"): every objective here selects *worse* than
plain ISAL (linear 93.74 % AUBC over 5 seeds against 94.05 %; loss and capped stopped after one seed); the
Newton-step model discounts novel items, which retraining from scratch rewards. Kept as tested, documented
experiments; use ``isal_diverse`` for a batch-aware influence selection.

The curvature is exact: A = n (H + λI), H the Hessian of the mean labeled loss on the scope (a classifier's last
linear layer: from features cached in one pass), solved by one Cholesky factor shared by v and every candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..api import CLASSIFIER_HEAD, REFERENCE_SET, Selection, SelectionContext, Strategy, check_budget
from ..core.errors import ConfigError, SolverError
from ..influence.engine import InfluenceEngine
from ..influence.greedy import greedy_batch, greedy_capped, greedy_lookahead, single_gains
from ..settings import InfluenceConfig


@dataclass
class _Reference:
    features: torch.Tensor  # the last layer's inputs [R, F]
    logits: torch.Tensor    # [R, C]
    loss: Callable[[torch.Tensor], torch.Tensor]  # summed reference loss of logits [..., R, C] -> [...]


class BatchISALStrategy(Strategy):
    """Greedy batch influence (module docstring).

    ``objective``: ``capped`` maximises the reference items' predicted loss decreases, each capped at that item's
    loss (:func:`~influal.influence.greedy.greedy_capped`; any scope); ``loss`` minimises the reference loss
    evaluated exactly after the predicted step (:func:`~influal.influence.greedy.greedy_lookahead`; scope
    ``last`` only), ``linear`` (default) maximises its first-order decrease F(S)
    (:func:`~influal.influence.greedy.greedy_batch`; any scope);
    ``damping``: λ of the mean labeled Hessian (as ISAL's); ``scope``: the parameters differentiated (``last``, a
    classifier's final layer; with ``linear`` any scope up to ``max_params`` parameters, one backward per item);
    ``candidates``: the greedy runs over this many candidates of largest value alone (the objective's own: the
    reference loss after the item's step, or F({j}); None: all); ``reference_size``: a random subset of the
    reference set. ``scores`` are -F({j}) per candidate (lower = wanted more): each item's first-order value alone.
    Memory: the shortlist's gradients twice (2 x candidates x d float64) and, for ``loss``,
    candidates x reference items x classes float64.
    """

    name = "isal_batch"
    requires = frozenset({REFERENCE_SET, CLASSIFIER_HEAD})

    OBJECTIVES = ("capped", "loss", "linear")

    def __init__(self, objective: str = "linear", damping: float = 0.01, scope: str = "last",
                 candidates: int | None = 1000, reference_size: int | None = None, batch_size: int = 256,
                 max_params: int = 20_000):
        if objective not in self.OBJECTIVES:
            raise ConfigError(f"isal_batch's objective must be one of {', '.join(self.OBJECTIVES)}, got {objective!r}")
        if not isinstance(damping, (int, float)) or isinstance(damping, bool) or not damping > 0:
            raise ConfigError(f"isal_batch's damping must be a number > 0, got {damping!r}")
        self.objective = objective
        for key, value in (("candidates", candidates), ("reference_size", reference_size)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"isal_batch's {key} must be an integer >= 1 or None, got {value!r}")
        self.damping, self.scope, self.candidates = float(damping), scope, candidates
        self.reference_size, self.batch_size, self.max_params = reference_size, batch_size, max_params
        self.config = InfluenceConfig(scope=scope, solver="exact", damping=self.damping, batch_size=batch_size,
                                      exact_max_params=max_params, reference_size=reference_size)

    def check(self, task, model) -> None:
        """A scope too large for a dense Hessian, or one the task cannot serve, fails at start."""
        super().check(task, model)
        self._engine(model, task)

    def _engine(self, model, task) -> InfluenceEngine:
        engine = InfluenceEngine(model, task, self.config)
        if engine.scope.numel > self.max_params:
            raise ConfigError(f"isal_batch builds a dense {engine.scope.numel}x{engine.scope.numel} Hessian on scope "
                              f"{self.scope!r}, above max_params={self.max_params}: use scope 'last'")
        if self.objective == "loss":
            head = {id(p) for p in task.head(model).parameters()}
            if {id(p) for p in engine.scope.params} != head or getattr(task, "logit_loss", None) is None:
                raise ConfigError(f"isal_batch's objective 'loss' evaluates the reference loss after the step on the "
                                  f"final linear layer only (scope 'last', a task with logit_loss); scope "
                                  f"{self.scope!r} needs objective 'linear'")
        return engine

    def _reference(self, ctx: SelectionContext, ref_ids):
        """The reference set's last-layer inputs, logits and summed loss of logits (the task's own logit loss)."""
        task, model = ctx.task, ctx.model
        feats, logits, labels = [], [], []
        with torch.no_grad():
            for _, x, y in task.batches(ctx.reference, ref_ids, self.batch_size):
                f, z = task.features_and_logits(model, x)
                feats.append(f.double().cpu())
                logits.append(z.double().cpu())
                labels.append(y.cpu())
        feats, logits, labels = torch.cat(feats), torch.cat(logits), torch.cat(labels)

        def loss(z: torch.Tensor) -> torch.Tensor:
            lead = z.shape[:-2]
            flat = z.reshape(-1, z.shape[-1])
            per = task.logit_loss(flat, labels.repeat(flat.shape[0] // len(labels)))
            return per.reshape(*lead, len(labels)).sum(dim=-1)

        return _Reference(feats, logits, loss)

    def _reference_losses(self, ctx: SelectionContext, engine: InfluenceEngine, ref_ids, L: torch.Tensor):
        """Each reference item's loss [R] and the columns A⁻¹ g_r [d, R] of its true-label gradient."""
        losses = []
        with torch.no_grad():
            for _, x, y in ctx.task.batches(ctx.reference, ref_ids, self.batch_size):
                losses.append(ctx.task.loss(ctx.model, x, y).double().cpu())
        grads = engine.gradients(ctx.reference, ref_ids, targets="true").double()
        return torch.cat(losses), torch.cholesky_solve(grads.T, L)

    @staticmethod
    def _logit_shifts(ctx: SelectionContext, engine: InfluenceEngine, reference, P: torch.Tensor) -> torch.Tensor:
        """Q = J A⁻¹ g_j [N, R, C] from the rows P = A⁻¹ g_j: the reference logits' change per unit step."""
        head = ctx.task.head(ctx.model)
        parts = dict(zip((id(p) for p in engine.scope.params), P.split(engine.scope.sizes, dim=1)))
        weight = parts[id(head.weight)].reshape(len(P), *head.weight.shape)
        Q = torch.einsum("ncf,rf->nrc", weight, reference.features)
        if head.bias is not None and id(head.bias) in parts:
            Q += parts[id(head.bias)][:, None, :]
        return Q

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        if ctx.reference is None or ctx.reference_ids is None or len(ctx.reference_ids) == 0:
            raise ConfigError("isal_batch needs a reference set (a validation split); none was given")
        if len(ctx.labeled_ids) == 0:
            raise ConfigError("isal_batch needs a non-empty labeled set for its Hessian")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        engine = self._engine(ctx.model, ctx.task)
        ref_ids = ctx.reference_ids
        if self.reference_size is not None and self.reference_size < len(ref_ids):
            ref_ids = ref_ids[torch.randperm(len(ref_ids), generator=ctx.generator)[:self.reference_size].numpy()]
        v = engine.reference_gradient(ctx.reference, ref_ids).double().cpu()
        timings["v_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        n = len(ctx.labeled_ids)
        with torch.no_grad():
            H = engine.hessian(ctx.pool, ctx.labeled_ids).dense().double().cpu()
        A = n * (H + self.damping * torch.eye(len(H), dtype=H.dtype))
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            eig_min = float(torch.linalg.eigvalsh(A)[0]) / n
            raise SolverError(f"H + λI is not positive definite (smallest eigenvalue {eig_min:.3g}); raise "
                              f"isal_batch's damping above {max(0.0, -eig_min + self.damping):.3g}")
        s = torch.cholesky_solve(v.unsqueeze(1), L).squeeze(1)
        timings["s_test_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        G = engine.gradients(ctx.pool, ctx.unlabeled_ids, progress=ctx.progress)
        timings["gradients_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        first = torch.empty(len(G), dtype=torch.float64)
        for start in range(0, len(G), 2048):
            block = G[start:start + 2048].double()
            first[start:start + 2048] = single_gains(block, torch.cholesky_solve(block.T, L).T, s)
        value = first
        if self.objective == "capped":  # D[j, r]: the decrease of reference item r's loss if j joins
            caps, M = self._reference_losses(ctx, engine, ref_ids, L)
            value = torch.cat([torch.minimum(G[i:i + 1024].double() @ M, caps).sum(dim=1)
                               for i in range(0, len(G), 1024)])
        elif self.objective == "loss":  # each candidate's exact value alone: the reference loss after its own step
            reference = self._reference(ctx, ref_ids)
            before = reference.loss(reference.logits)
            value = torch.empty(len(G), dtype=torch.float64)
            for start in range(0, len(G), 256):
                block = G[start:start + 256].double()
                Pb = torch.cholesky_solve(block.T, L).T
                step = (1.0 / (1.0 + (block * Pb).sum(dim=1)))[:, None, None]
                Q = self._logit_shifts(ctx, engine, reference, Pb)
                value[start:start + 256] = before - reference.loss(reference.logits - step * Q)
        keep = len(G) if self.candidates is None else max(min(self.candidates, len(G)), int(budget))
        # the shortlist: largest single values, ties to the lower position (a deterministic order)
        order = np.lexsort((np.arange(len(G)), -value.numpy()))
        short = np.sort(order[:keep])
        Gs = G[short].double()
        Ps = torch.cholesky_solve(Gs.T, L).T
        if self.objective == "capped":
            result = greedy_capped(Gs @ M, caps, int(budget))
        elif self.objective == "loss":
            result = greedy_lookahead(Gs, Ps, self._logit_shifts(ctx, engine, reference, Ps), reference.logits,
                                      reference.loss, int(budget))
        else:
            result = greedy_batch(Gs, Ps, s, int(budget))
        timings["greedy_s"] = time.perf_counter() - t0

        picked = short[result.order]
        alone = float(result.first_gains[result.order].sum())
        info_out: dict[str, Any] = {
            "scored": int(len(G)), "shortlist": int(keep), "scope": engine.cfg.scope, "params": int(len(H)),
            "objective": self.objective, "damping": self.damping, "batch_value": result.total,
            "sum_single_values": alone,
            "redundancy": (1.0 - result.total / alone) if alone > 0 else None,
            **{k: round(t, 4) for k, t in timings.items()}}
        return Selection(ctx.unlabeled_ids[picked], -first.numpy(), info_out)
