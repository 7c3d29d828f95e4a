"""Batch-aware influence: the predicted reference-loss reduction of a whole batch, maximised greedily.

ISAL scores every candidate on its own, so the ``B`` best are often near-duplicates (the same confusion, the same
class). Here the batch is valued as a whole. With A the Hessian of the *summed* labeled objective (plus damping),
v the summed reference gradient and g_j the gradient of candidate j at its pseudo-label, adding a set S to the
labeled set and taking one Newton step moves the parameters by ``-A_S⁻¹ G_S`` with

    A_S = A + Σ_{j∈S} g_j g_jᵀ        (each added item brings its own curvature, rank one: its pseudo-label's
                                         outer product, the empirical Fisher of that item)
    G_S = Σ_{j∈S} g_j,

and the first-order prediction of the reference loss's *decrease* is

    F(S) = vᵀ A_S⁻¹ G_S.

For one item ``F({j}) = a_j / (1 + c_j)`` with ``a_j = g_jᵀ A⁻¹ v`` (ISAL's score, negated) and ``c_j = g_jᵀ A⁻¹ g_j``
(its self-influence): outliers with a large self-influence are already discounted. The greedy adds, one at a time,
the item of largest marginal gain; by Sherman–Morrison (``A_{S+j}⁻¹ = A_S⁻¹ - u uᵀ / (1 + c_j)``, ``u = A_S⁻¹ g_j``)

    F(S + j) - F(S) = a_j (1 - b_j) / (1 + c_j),   a_j = g_jᵀ A_S⁻¹ v,  b_j = g_jᵀ A_S⁻¹ G_S,  c_j = g_jᵀ A_S⁻¹ g_j,

and after picking z, with ``w = G A_S⁻¹ g_z`` (one matrix-vector product over the candidates):

    a ← a - w a_z / (1 + c_z),   b ← b + w (1 - b_z) / (1 + c_z),   c ← c - w² / (1 + c_z).

An item whose gradient is close to one already picked sees its a shrink by about c_z / (1 + c_z): redundancy is
paid for where the batch's curvature already covers it. A whole batch costs O(B·N·d + B²·d) after the N solves
``A⁻¹ g_j`` (one Cholesky factor, shared). tests/test_greedy_influence.py checks every pick and gain against
re-solving ``F`` from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class GreedyBatch:
    """The picked rows in pick order, each pick's marginal gain, and F of the whole batch (= the gains' sum)."""

    order: np.ndarray
    gains: np.ndarray
    first_gains: np.ndarray  # F({j}) = a_j / (1 + c_j) of every candidate, before any pick

    @property
    def total(self) -> float:
        return float(self.gains.sum())


def single_gains(G: torch.Tensor, P: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """F({j}) = a_j / (1 + c_j) for every row, from G [N, d], P = rows of A⁻¹ g_j [N, d] and s = A⁻¹ v."""
    return (G @ s) / (1.0 + (G * P).sum(dim=1))


def greedy_batch(G: torch.Tensor, P: torch.Tensor, s: torch.Tensor, budget: int) -> GreedyBatch:
    """Greedy maximisation of F(S) = vᵀ A_S⁻¹ G_S (module docstring) over the rows of ``G``.

    ``G`` [N, d]: the candidates' gradients; ``P`` [N, d]: the rows ``A⁻¹ g_j``; ``s`` [d]: ``A⁻¹ v``. Computed in
    float64. Ties go to the lowest row; a row is never picked twice.
    """
    G, P, s = G.double(), P.double(), s.double()
    n = len(G)
    if not 1 <= budget <= n:
        raise ValueError(f"budget {budget} must be between 1 and the {n} candidates")
    a = G @ s
    c = (G * P).sum(dim=1)
    first = (a / (1.0 + c)).clone()
    b = torch.zeros_like(a)
    taken = torch.zeros(n, dtype=torch.bool)
    us = torch.empty((budget, G.shape[1]), dtype=torch.float64)  # u_k = A_{S_k}⁻¹ g_{z_k}
    denoms = torch.empty(budget, dtype=torch.float64)            # 1 + c_{z_k} at its pick
    order, gains = [], []
    for t in range(budget):
        gain = a * (1.0 - b) / (1.0 + c)
        gain[taken] = -torch.inf
        z = int(torch.argmax(gain))
        order.append(z)
        gains.append(float(gain[z]))
        # u = A_S⁻¹ g_z = A⁻¹ g_z - Σ_k u_k (u_k · g_z) / (1 + c_k)
        u = P[z] - (us[:t].T @ ((us[:t] @ G[z]) / denoms[:t])) if t else P[z].clone()
        w = G @ u
        denom = 1.0 + c[z]
        az, bz = a[z].clone(), b[z].clone()
        a -= w * (az / denom)
        b += w * ((1.0 - bz) / denom)
        c -= w * w / denom
        us[t], denoms[t] = u, denom
        taken[z] = True
    return GreedyBatch(np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64), first.numpy())


def greedy_lookahead(G: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, logits: torch.Tensor,
                     loss: Callable[[torch.Tensor], torch.Tensor], budget: int) -> GreedyBatch:
    """Greedy minimisation of the reference loss *after* the predicted step, evaluated exactly (not to first order).

    With the parameters linear in the reference logits (a classifier's last layer), adding S moves the reference
    logits from ``logits`` [R, C] to ``logits - J A_S⁻¹ G_S``; ``Q`` [N, R, C] holds ``J A⁻¹ g_j`` for every
    candidate. ``loss`` maps logits [..., R, C] to the summed reference loss [...]. The objective saturates where
    the linear one cannot: a reference item the batch already fixes stops paying for more items aimed at it, and a
    step that overshoots costs. By Sherman–Morrison, ``A_S⁻¹ G_S`` grows by ``u_j (1 - b_j) / (1 + c_j)`` when j
    joins, and every ``J A_S⁻¹ g_j`` loses ``w_j / (1 + c_z)`` times the picked one's. ``gains`` are the decreases
    of the reference loss, pick by pick; ``first_gains`` the decrease each candidate brings alone.
    """
    G, P, Q, logits = G.double(), P.double(), Q.double().clone(), logits.double()
    n = len(G)
    if not 1 <= budget <= n:
        raise ValueError(f"budget {budget} must be between 1 and the {n} candidates")
    c = (G * P).sum(dim=1)
    b = torch.zeros_like(c)
    shift = torch.zeros_like(logits)  # J A_S⁻¹ G_S
    taken = torch.zeros(n, dtype=torch.bool)
    us = torch.empty((budget, G.shape[1]), dtype=torch.float64)
    denoms = torch.empty(budget, dtype=torch.float64)
    current = float(loss(logits))
    order, gains, first = [], [], None
    for t in range(budget):
        step = ((1.0 - b) / (1.0 + c))[:, None, None]
        values = torch.cat([loss(logits - shift - step[i:i + 256] * Q[i:i + 256]) for i in range(0, n, 256)])
        if first is None:
            first = (current - values).numpy()
        values[taken] = torch.inf
        z = int(torch.argmin(values))
        order.append(z)
        gains.append(current - float(values[z]))
        current = float(values[z])
        u = P[z] - (us[:t].T @ ((us[:t] @ G[z]) / denoms[:t])) if t else P[z].clone()
        w = G @ u
        denom = 1.0 + c[z]
        shift += Q[z] * ((1.0 - b[z]) / denom)
        Q -= (w / denom)[:, None, None] * Q[z].clone()
        b += w * ((1.0 - b[z].clone()) / denom)
        c -= w * w / denom
        us[t], denoms[t] = u, denom
        taken[z] = True
    return GreedyBatch(np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64), first)


def greedy_capped(D: torch.Tensor, caps: torch.Tensor, budget: int) -> GreedyBatch:
    """Greedy maximisation of ``C(S) = Σ_r min(caps_r, Σ_{j∈S} D[j, r])``: per-reference-item predicted loss
    decreases ``D`` [N, R] (ISAL's influence split by reference item), each capped at that item's loss ``caps``.

    ISAL maximises the uncapped sum, as if a reference item's loss could fall without bound; with the cap, a
    reference item the batch is already predicted to fix stops paying, so the batch spreads over the reference
    errors. C is a concave function of a modular one (submodular): the greedy is the standard (1 - 1/e)
    approximation where it is also monotone. Ties go to the lowest row.
    """
    D, caps = D.double(), caps.double()
    n = len(D)
    if not 1 <= budget <= n:
        raise ValueError(f"budget {budget} must be between 1 and the {n} candidates")
    cover = torch.zeros_like(caps)
    taken = torch.zeros(n, dtype=torch.bool)
    order, gains, first = [], [], None
    for _ in range(budget):
        now = torch.minimum(cover, caps).sum()
        gain = torch.cat([torch.minimum(cover + D[i:i + 1024], caps).sum(dim=1) for i in range(0, n, 1024)]) - now
        if first is None:
            first = gain.clone().numpy()
        gain[taken] = -torch.inf
        z = int(torch.argmax(gain))
        order.append(z)
        gains.append(float(gain[z]))
        cover += D[z]
        taken[z] = True
    return GreedyBatch(np.asarray(order, dtype=np.int64), np.asarray(gains, dtype=np.float64), first)


def batch_value(A: torch.Tensor, G: torch.Tensor, v: torch.Tensor, rows) -> float:
    """F(S) solved from scratch (for tests and checks): vᵀ (A + Σ_S g gᵀ)⁻¹ Σ_S g, float64."""
    A, G, v = A.double(), G.double(), v.double()
    rows = list(rows)
    if not rows:
        return 0.0
    Gs = G[rows]
    return float(v @ torch.linalg.solve(A + Gs.T @ Gs, Gs.sum(dim=0)))


__all__ = ["GreedyBatch", "batch_value", "greedy_batch", "greedy_capped", "greedy_lookahead", "single_gains"]
