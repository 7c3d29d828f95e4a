"""The batch-aware influence greedy (influence/greedy.py) against re-solving F(S) = vᵀ (A + Σ_S g gᵀ)⁻¹ Σ_S g."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influal.influence.greedy import batch_value, greedy_batch, greedy_capped, greedy_lookahead, single_gains


def _problem(n=9, d=5, seed=0, duplicate=False):
    gen = torch.Generator().manual_seed(seed)
    M = torch.randn(d, d, generator=gen, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(d, dtype=torch.float64)
    G = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if duplicate:
        G[1] = G[0]
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    P = torch.linalg.solve(A, G.T).T
    s = torch.linalg.solve(A, v)
    return A, G, v, P, s


@pytest.mark.parametrize("seed", range(4))
def test_every_pick_is_the_brute_force_argmax_and_every_gain_matches(seed):
    A, G, v, P, s = _problem(seed=seed)
    result = greedy_batch(G, P, s, budget=6)
    chosen: list[int] = []
    for pick, gain in zip(result.order, result.gains):
        base = batch_value(A, G, v, chosen)
        brute = {j: batch_value(A, G, v, chosen + [j]) - base for j in range(len(G)) if j not in chosen}
        best = max(brute, key=lambda j: (brute[j], -j))
        assert pick == best
        assert gain == pytest.approx(brute[pick], rel=1e-9, abs=1e-12)
        chosen.append(int(pick))
    assert result.total == pytest.approx(batch_value(A, G, v, chosen), rel=1e-9)


def test_first_gains_are_the_single_item_values():
    A, G, v, P, s = _problem(seed=5)
    result = greedy_batch(G, P, s, budget=1)
    single = [batch_value(A, G, v, [j]) for j in range(len(G))]
    assert np.allclose(result.first_gains, single, rtol=1e-10)
    assert np.allclose(single_gains(G, P, s).numpy(), single, rtol=1e-10)
    assert result.order[0] == int(np.argmax(single))


def test_a_duplicate_of_a_picked_item_loses_most_of_its_value():
    A, G, v, P, s = _problem(seed=3, duplicate=True)
    G[:2] *= 4.0  # strong items: a large self-influence
    G[2:] *= 0.05
    P = torch.linalg.solve(A, G.T).T
    v = 10.0 * G[0]  # the reference gradient points along item 0's gradient
    s = torch.linalg.solve(A, v)
    result = greedy_batch(G, P, s, budget=3)
    assert result.order[0] in (0, 1)
    twin = 1 - int(result.order[0])
    alone = batch_value(A, G, v, [twin])
    after = batch_value(A, G, v, [int(result.order[0]), twin]) - batch_value(A, G, v, [int(result.order[0])])
    assert after < 0.1 * alone  # the twin's marginal value after its copy is picked
    a = (G @ s).numpy()
    assert set(np.argsort(-a)[:2].tolist()) == {0, 1}  # ranked one by one (ISAL), both copies come first


def test_refuses_a_budget_outside_the_candidates():
    _, G, _, P, s = _problem()
    for bad in (0, len(G) + 1):
        with pytest.raises(ValueError, match="budget"):
            greedy_batch(G, P, s, bad)


def _lookahead_problem(seed=0, n=8, d=6, r=5, classes=3):
    A, G, v, P, s = _problem(n=n, d=d, seed=seed)
    gen = torch.Generator().manual_seed(100 + seed)
    J = torch.randn(r, classes, d, generator=gen, dtype=torch.float64)  # reference logits linear in θ
    logits = torch.randn(r, classes, generator=gen, dtype=torch.float64)
    labels = torch.randint(classes, (r,), generator=gen)

    def loss(z):  # summed cross-entropy over the reference items, for logits [..., r, C]
        return -(torch.log_softmax(z, dim=-1).gather(-1, labels.expand(z.shape[:-1]).unsqueeze(-1))).sum((-1, -2))

    Q = torch.einsum("rcd,nd->nrc", J, P)
    return A, G, P, J, logits, loss, Q


def _loss_after(A, G, J, logits, loss, rows):
    if not rows:
        return float(loss(logits))
    Gs = G[list(rows)]
    step = torch.linalg.solve(A + Gs.T @ Gs, Gs.sum(dim=0))
    return float(loss(logits - J @ step))


@pytest.mark.parametrize("seed", range(3))
def test_lookahead_picks_and_gains_match_the_reference_loss_resolved_from_scratch(seed):
    A, G, P, J, logits, loss, Q = _lookahead_problem(seed)
    result = greedy_lookahead(G, P, Q, logits, loss, budget=5)
    chosen: list[int] = []
    for pick, gain in zip(result.order, result.gains):
        before = _loss_after(A, G, J, logits, loss, chosen)
        after = {j: _loss_after(A, G, J, logits, loss, chosen + [j]) for j in range(len(G)) if j not in chosen}
        assert pick == min(after, key=lambda j: (after[j], j))
        assert gain == pytest.approx(before - after[pick], rel=1e-9, abs=1e-12)
        chosen.append(int(pick))
    base = _loss_after(A, G, J, logits, loss, [])
    alone = [base - _loss_after(A, G, J, logits, loss, [j]) for j in range(len(G))]
    assert np.allclose(result.first_gains, alone, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_capped_greedy_matches_the_capped_objective_resolved_from_scratch(seed):
    gen = torch.Generator().manual_seed(seed)
    D = torch.randn(10, 6, generator=gen, dtype=torch.float64)  # some items raise a reference item's loss
    caps = torch.rand(6, generator=gen, dtype=torch.float64) * 2

    def value(rows):
        return float(torch.minimum(D[list(rows)].sum(0), caps).sum()) if rows else 0.0

    result = greedy_capped(D, caps, budget=6)
    chosen: list[int] = []
    for pick, gain in zip(result.order, result.gains):
        gains = {j: value(chosen + [j]) - value(chosen) for j in range(len(D)) if j not in chosen}
        assert pick == max(gains, key=lambda j: (gains[j], -j))
        assert gain == pytest.approx(gains[pick], abs=1e-12)
        chosen.append(int(pick))
    assert result.total == pytest.approx(value(chosen))
    assert np.allclose(result.first_gains, [value([j]) for j in range(len(D))])


def test_capped_greedy_spreads_over_reference_items_that_the_uncapped_sum_would_not():
    # items 0-2 each fix reference item 0 (loss 1) by 1.0; item 3 fixes reference item 1 by 0.6
    D = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.6]], dtype=torch.float64)
    result = greedy_capped(D, torch.tensor([1.0, 1.0], dtype=torch.float64), budget=2)
    assert sorted(result.order.tolist()) == [0, 3]
    assert np.argsort(-D.sum(1).numpy(), kind="stable")[:2].tolist() == [0, 1]  # ISAL's top two: one error twice
