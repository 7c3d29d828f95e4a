"""Each strategy's own known answers: brute force and hand checks (the shared contract is in tests/contract)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import blob_splits, mlp_model
from torch import nn

from influal.core.errors import ConfigError
from influal.settings import TrainConfig
from influal.strategies import STRATEGIES, SelectionContext, make_strategy
from influal.strategies.badge import badge_embedding, gradient_factors
from influal.strategies.bald import BALDStrategy, bald_from_samples
from influal.strategies.kernels import factored_sq_distances, k_center_greedy, kmeans_pp_factored, min_distances
from influal.strategies.learning_loss import (
    LearningLossStrategy,
    LossLearner,
    LossPredictionModule,
    discover_taps,
    margin_ranking_loss,
)
from influal.strategies.uncertainty import neg_entropy, top2_margin, top_probability
from influal.tasks.classification import ClassificationTask
from influal.tasks.classification.models import ResNet18, SmallCNN

PAPER_AND_BASELINES = {"isal", "random", "coreset", "entropy", "margin", "least_confidence", "bald", "badge",
                       "learning_loss"}
TRAIN = TrainConfig(epochs=3, lr=0.05, batch_size=16, milestones=())
N_LABELED = 24


def make_context(name: str, seed: int = 0, gen_seed: int = 7):
    """A strategy and a selection context over a freshly trained small CNN, all from ``seed``."""
    splits = blob_splits(pool=90, val=30, test=10, size=8, seed=1)
    task = ClassificationTask(3, eval_batch_size=32)
    labeled = np.arange(N_LABELED)
    unlabeled = np.arange(N_LABELED, len(splits.pool))
    strategy = make_strategy(name, **({"lissa_depth": 10, "lissa_repeats": 2, "scale": 100.0, "batch_size": 64}
                                      if name == "isal" else {}))
    torch.manual_seed(seed)
    model = SmallCNN(3, 1, width=4, hidden=8)
    trained, extra = model, {}
    prepared = strategy.prepare_training(model, task, splits.pool, labeled, TRAIN)
    if prepared is not None:
        trained, extra["loss_fn"] = prepared
    task.train(trained, splits.pool, labeled, TRAIN, torch.Generator().manual_seed(seed), **extra)
    ctx = SelectionContext(model=model, task=task, pool=splits.pool, labeled_ids=labeled, unlabeled_ids=unlabeled,
                           reference=splits.val, generator=torch.Generator().manual_seed(gen_seed))
    return strategy, ctx


def test_registry_holds_the_paper_baselines_and_the_usual_strategies():
    assert PAPER_AND_BASELINES <= set(STRATEGIES.names())
    for name in PAPER_AND_BASELINES:
        assert make_strategy(name).name == name


# ---- core-set ------------------------------------------------------------------------------------------------

def _naive_k_center(unlabeled, labeled, budget):
    """Greedy k-center written with plain loops: the reference for the chunked, vectorised one."""
    centres = [tuple(p) for p in labeled]
    chosen = []
    for _ in range(budget):
        best, best_d = None, -1.0
        for i, p in enumerate(unlabeled):
            if i in chosen:
                continue
            d = min(math.dist(p, c) for c in centres)
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
        centres.append(tuple(unlabeled[best]))
    return chosen


def _covering_radius(points, centres):
    return max(min(math.dist(p, c) for c in centres) for p in points)


def test_k_center_greedy_matches_brute_force_and_is_a_2_approximation():
    rng = np.random.default_rng(3)
    unlabeled = rng.normal(size=(10, 3))
    labeled = rng.normal(size=(2, 3))
    budget = 3
    picked, radii = k_center_greedy(torch.from_numpy(unlabeled), torch.from_numpy(labeled), budget, row_chunk=3)
    assert picked.tolist() == _naive_k_center(unlabeled.tolist(), labeled.tolist(), budget)
    everything = np.vstack([unlabeled, labeled])
    # the distance each pick had is its distance to the nearest earlier centre
    for step, idx in enumerate(picked):
        centres = list(labeled) + [unlabeled[j] for j in picked[:step]]
        assert radii[step] == pytest.approx(min(math.dist(unlabeled[idx], c) for c in centres))
    # k-center greedy is a 2-approximation of the best covering radius among all choices of `budget` centres
    greedy = _covering_radius(everything, list(labeled) + [unlabeled[j] for j in picked])
    best = min(_covering_radius(everything, list(labeled) + [unlabeled[j] for j in subset])
               for subset in itertools.combinations(range(len(unlabeled)), budget))
    assert best <= greedy <= 2 * best + 1e-12


def test_min_distances_in_chunks_equals_the_full_matrix():
    g = torch.Generator().manual_seed(0)
    points, centres = torch.randn(23, 5, generator=g, dtype=torch.float64), torch.randn(17, 5, generator=g,
                                                                                          dtype=torch.float64)
    full = torch.cdist(points, centres).min(dim=1).values
    assert torch.allclose(min_distances(points, centres, row_chunk=4, col_chunk=5), full)
    assert torch.isinf(min_distances(points, centres[:0])).all()


def test_k_center_greedy_without_labeled_items_draws_its_first_centre_from_the_generator():
    pts = torch.arange(8, dtype=torch.float64).reshape(8, 1)
    a, _ = k_center_greedy(pts, pts[:0], 3, generator=torch.Generator().manual_seed(1))
    b, _ = k_center_greedy(pts, pts[:0], 3, generator=torch.Generator().manual_seed(1))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 3
    assert a[1] == (7 if a[0] < 3.5 else 0)  # the point farthest from the random first centre comes next


# ---- uncertainty and BALD --------------------------------------------------------------------------------------

def test_uncertainty_scores_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.8, 0.1, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=torch.float64)
    assert torch.allclose(-neg_entropy(p), torch.tensor([math.log(2), -(0.8 * math.log(0.8) + 0.2 * math.log(0.1)),
                                                         math.log(3)], dtype=torch.float64))
    assert torch.allclose(top2_margin(p), torch.tensor([0.0, 0.7, 0.0], dtype=torch.float64))
    assert torch.allclose(top_probability(p), torch.tensor([0.5, 0.8, 1 / 3], dtype=torch.float64))


def test_uncertainty_strategies_pick_the_most_uncertain_items():
    for name in ("entropy", "margin", "least_confidence"):
        strategy, ctx = make_context(name)
        probs = ctx.task.predict_proba(ctx.model, ctx.pool, ctx.unlabeled_ids).double()
        key = {"entropy": -(-neg_entropy(probs)), "margin": top2_margin(probs),
               "least_confidence": top_probability(probs)}[name].numpy()
        chosen = strategy.select(ctx, 5).ids
        worst_kept = key[np.isin(ctx.unlabeled_ids, chosen)].max()
        best_left = key[~np.isin(ctx.unlabeled_ids, chosen)].min()
        assert worst_kept <= best_left


def test_bald_by_hand():
    disagree = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]], dtype=torch.float64)  # [T=2, n=1, C=2]
    agree = torch.tensor([[[0.3, 0.7]], [[0.3, 0.7]]], dtype=torch.float64)
    assert bald_from_samples(disagree).item() == pytest.approx(math.log(2))
    assert bald_from_samples(agree).item() == pytest.approx(0.0, abs=1e-12)


def test_bald_uses_the_models_dropout_layers_and_leaves_batchnorm_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3)).eval()
    stats = model[2].running_mean.clone()
    x = torch.randn(5, 1, 2, 2)
    probs = BALDStrategy(samples=4).mc_probs(model, x, torch.Generator().manual_seed(0), ClassificationTask(3))
    assert probs.shape == (4, 5, 3)
    assert not torch.allclose(probs[0], probs[1])  # the dropout layer is stochastic ...
    assert torch.equal(model[2].running_mean, stats)  # ... while BatchNorm stays in eval mode
    plain = F.softmax(model(x), dim=1)  # hooks are removed afterwards: the model is deterministic again
    assert torch.equal(plain, F.softmax(model(x), dim=1))


def test_bald_without_dropout_layers_drops_penultimate_features():
    torch.manual_seed(0)
    model = mlp_model(size=2).eval()
    x = torch.randn(6, 1, 2, 2)
    probs = BALDStrategy(samples=3, p=0.5).mc_probs(model, x, torch.Generator().manual_seed(0), ClassificationTask(3))
    assert probs.shape == (3, 6, 3)
    assert torch.allclose(probs.sum(-1), torch.ones(3, 6))
    assert not torch.allclose(probs[0], probs[1])


# ---- BADGE -----------------------------------------------------------------------------------------------------

def test_badge_embedding_by_hand():
    a = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64) - torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    f = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([[-0.3, -0.6, 0.2, 0.4, 0.1, 0.2]], dtype=torch.float64)
    assert torch.allclose(badge_embedding(a, f), expected)


def test_badge_embedding_is_the_last_layer_gradient_at_the_pseudo_label():
    splits = blob_splits(pool=12, val=2, test=2, size=6, seed=2)
    model = mlp_model(size=6).eval()
    ids = np.arange(12)
    a, f = gradient_factors(model, ClassificationTask(3), splits.pool, ids, batch_size=5)
    emb = badge_embedding(a, f)
    x, _ = splits.pool.get_batch(ids)
    for i in range(len(ids)):
        logits = model(x[i:i + 1])
        loss = F.cross_entropy(logits, logits.argmax(1))
        (g,) = torch.autograd.grad(loss, model[3].weight)
        assert torch.allclose(emb[i].float(), g.reshape(-1), atol=1e-6)


def test_badge_factored_distances_and_seeding_match_the_explicit_embeddings():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(15, 4, generator=g, dtype=torch.float64), dim=1)
    a = probs - F.one_hot(probs.argmax(1), 4).double()
    f = torch.randn(15, 6, generator=g, dtype=torch.float64).relu()
    emb = badge_embedding(a, f)
    for j in (0, 7):
        assert torch.allclose(factored_sq_distances(a, f, j), ((emb - emb[j]) ** 2).sum(1), atol=1e-12)
    # the same seeding written on the explicit embeddings, drawing from an identically seeded generator
    ref_gen = torch.Generator().manual_seed(9)
    chosen = [int(emb.norm(dim=1).argmax())]
    while len(chosen) < 6:
        d2 = torch.cdist(emb, emb[chosen]).min(dim=1).values ** 2
        d2[chosen] = 0.0
        chosen.append(int(torch.multinomial(d2, 1, generator=ref_gen)))
    picked = kmeans_pp_factored(a, f, 6, torch.Generator().manual_seed(9))
    assert picked.tolist() == chosen


# ---- learning loss ---------------------------------------------------------------------------------------------

def test_learning_loss_taps_are_discovered_generically():
    assert discover_taps(SmallCNN(3, 1)) == ["features.0", "features.1"]
    assert discover_taps(ResNet18(10, 3, width=4)) == ["layer1", "layer2", "layer3", "layer4"]
    mlp = mlp_model()
    assert discover_taps(mlp, head=mlp[3]) == ["3@input"]
    with pytest.raises(ConfigError, match="no feature maps to tap"):
        discover_taps(mlp)

    class Declared(nn.Module):
        loss_taps = ["body"]

        def __init__(self):
            super().__init__()
            self.body = nn.Linear(2, 2)

    assert discover_taps(Declared()) == ["body"]


def test_loss_prediction_module_shapes():
    module = LossPredictionModule([4, 8, 5], width=16)
    feats = [torch.randn(6, 4, 3, 3), torch.randn(6, 8, 2, 2), torch.randn(6, 5)]
    out = module(feats)
    assert out.shape == (6,)
    assert [b.in_features for b in module.branches] == [4, 8, 5] and module.head.in_features == 48
    with pytest.raises(ConfigError):
        module(feats[:2])


def test_margin_ranking_loss_by_hand():
    pred = torch.tensor([0.5, 0.0, 2.0, 1.0])
    target = torch.tensor([1.0, 3.0, 2.0, 0.0])
    # pairs (0,3): Δp=-0.5, Δl=+1 -> 1.5;  (1,2): Δp=-2, Δl=+1 -> 3;  mean 2.25
    assert margin_ranking_loss(pred, target).item() == pytest.approx(2.25)
    # odd batch: the middle item is unpaired; (0,4): Δp=3, Δl=-1 -> max(0, 1+3)=4; (1,3): Δp=-1, Δl=+2 -> 2
    pred5 = torch.tensor([3.0, 0.0, 9.0, 1.0, 0.0])
    target5 = torch.tensor([0.0, 2.0, 9.0, 0.0, 1.0])
    assert margin_ranking_loss(pred5, target5).item() == pytest.approx(3.0)
    assert margin_ranking_loss(pred[:1], target[:1]).item() == 0.0


def test_learning_loss_stops_its_gradient_into_the_backbone_after_60_percent_of_the_epochs():
    splits = blob_splits(pool=20, val=2, test=2, size=8, seed=0)
    task = ClassificationTask(3)
    torch.manual_seed(0)
    model = SmallCNN(3, 1, width=4, hidden=8)
    strategy = LearningLossStrategy()
    learner, loss_fn = strategy.prepare_training(model, task, splits.pool, np.arange(20), TrainConfig(epochs=200))
    assert isinstance(learner, LossLearner) and learner.stop_epoch == 120
    assert not learner.gradient_stopped(119) and learner.gradient_stopped(120)
    x, y = splits.pool.get_batch(np.arange(8))
    model.eval()  # fixed BatchNorm statistics, so every forward below is the same function

    def grads(loss):
        return torch.autograd.grad(loss, list(model.parameters()) + list(learner.module.parameters()),
                                   allow_unused=True)

    n_backbone = len(list(model.parameters()))
    plain = grads(task.loss(model, x, y).mean())[:n_backbone]
    before, after = grads(loss_fn(learner, x, y, 119)), grads(loss_fn(learner, x, y, 120))
    assert any(not torch.allclose(b, p) for b, p in zip(before[:n_backbone], plain))  # module reaches backbone
    for a, p in zip(after[:n_backbone], plain):  # after the switch: only the cross-entropy trains the backbone
        assert torch.allclose(a, p, atol=1e-7)
    for a, b in zip(after[n_backbone:], before[n_backbone:]):  # the module itself is trained all along
        assert a is not None and torch.allclose(a, b)


def test_learning_loss_scores_a_random_subset_and_needs_its_trained_module():
    strategy, ctx = make_context("learning_loss")
    strategy.subset = 20
    selection = strategy.select(ctx, 5)
    assert selection.info["candidates"] == 20 and len(selection.scores) == len(ctx.unlabeled_ids)
    scored = ~np.isnan(selection.scores)
    assert scored.sum() == 20 and set(selection.ids.tolist()) <= set(ctx.unlabeled_ids[scored].tolist())
    other = SmallCNN(3, 1, width=4, hidden=8)
    with pytest.raises(ConfigError):
        strategy.select(SelectionContext(model=other, task=ctx.task, pool=ctx.pool, labeled_ids=ctx.labeled_ids,
                                         unlabeled_ids=ctx.unlabeled_ids), 5)


def test_learning_loss_trains_through_the_loop_and_leaves_other_strategies_untouched(tmp_path):
    from influal.app.run import run_experiment
    from influal.loop.config import ExperimentConfig

    def config(strategies):
        return ExperimentConfig(dataset="blobs", model="custom", strategies=strategies, initial=12, budget=6,
                                rounds=2, seeds=1, device="cpu", train=TRAIN)

    def factory():
        return SmallCNN(3, 1, width=4, hidden=8)

    splits = blob_splits(pool=60, val=10, test=20, size=8, seed=3)
    alone = run_experiment(config(("random",)), tmp_path / "a", splits=splits, model_factory=factory)
    both = run_experiment(config(("learning_loss", "random")), tmp_path / "b", splits=splits, model_factory=factory)
    def outcome(state):
        return [(r.labeled, r.metrics, r.selected) for r in state.rounds]

    assert outcome(alone[("random", 0)]) == outcome(both[("random", 0)])  # same selections, bit-identical metrics
    ll = both[("learning_loss", 0)]
    assert len(ll.rounds[0].selected) == 6 and ll.rounds[0].selection["taps"] == "features.0,features.1"
    assert ll.rounds[0].metrics != both[("random", 0)].rounds[0].metrics  # the module's loss changed training
