"""The sign convention on a convex model: items ISAL ranks best really lower the reference loss most.

Multinomial logistic regression with an L2 term λ/2·|θ|² is trained to convergence (L-BFGS). Its Hessian is
H + λI, which the exact solver inverts with damping λ. The score is the first-order prediction: score / |L| is the
derivative of the summed reference loss with respect to the item's weight (relative to one labeled item) at 0.
Adding the whole item with its pseudo-label and retraining changes the loss roughly in proportion (slope about 0.46
at full weight on this problem, 0.985 at weight 0.01; docs/architecture.md), which is what the correlation checks.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import blob_splits, linear_model

from influal.settings import InfluenceConfig
from influal.strategies import ISALStrategy, SelectionContext, make_strategy
from influal.tasks.classification import ClassificationTask

LAM = 0.05


def fit(model, x, y, normalizer=None):
    """Minimise Σ l_i / normalizer + λ/2·|θ|² (normalizer = len(y) by default: the mean loss)."""
    normalizer = len(y) if normalizer is None else normalizer
    params = list(model.parameters())
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y, reduction="sum") / normalizer + 0.5 * LAM * sum((p ** 2).sum() for p in params)
        loss.backward()
        return loss

    opt.step(closure)
    return model.eval()


def reference_loss(model, splits):
    x, y = splits.val.get_batch(np.arange(len(splits.val)))
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y, reduction="sum"))


def test_isal_scores_predict_the_retrained_reference_loss_change():
    splits = blob_splits(pool=110, val=60, test=10, seed=4)
    labeled = np.arange(60)  # large enough that one item is a small perturbation
    unlabeled = np.arange(60, 110)
    x, y = splits.pool.get_batch(labeled)
    base = fit(linear_model(seed=0), x, y)
    ctx = SelectionContext(model=base, task=ClassificationTask(3), pool=splits.pool, labeled_ids=labeled,
                           unlabeled_ids=unlabeled, reference=splits.val)
    strategy = make_strategy("isal", scope="all", solver="exact", damping=LAM, batch_size=16)
    selection = strategy.select(ctx, budget=5)
    scores = selection.scores
    result = ctx.extras["influence"]
    assert np.array_equal(result.ids, unlabeled)

    base_loss = reference_loss(base, splits)
    with torch.no_grad():
        pseudo = base(splits.pool.get_batch(unlabeled)[0]).argmax(1)
    actual = []
    for z, label in zip(unlabeled, pseudo):
        xz, _ = splits.pool.get_batch([z])
        model = linear_model(seed=0)
        model.load_state_dict(base.state_dict())
        fit(model, torch.cat([x, xz]), torch.cat([y, label.view(1)]), normalizer=len(labeled))
        actual.append(reference_loss(model, splits) - base_loss)
    actual = np.array(actual)
    predicted = scores / len(labeled)

    order = np.argsort(scores)
    best, worst = order[:5], order[-5:]
    assert actual[best].mean() < actual[worst].mean()
    assert set(selection.ids) == set(unlabeled[best])
    assert np.corrcoef(predicted, actual)[0, 1] > 0.9
    # the deprecated way (settings in the context) still gives the same selection, with a warning
    old_ctx = SelectionContext(model=base, task=ClassificationTask(3), pool=splits.pool, labeled_ids=labeled,
                               unlabeled_ids=unlabeled, reference=splits.val,
                               influence=InfluenceConfig(scope="all", solver="exact", damping=LAM, batch_size=16))
    with pytest.warns(DeprecationWarning, match="SelectionContext.influence is deprecated"):
        assert np.array_equal(ISALStrategy().select(old_ctx, budget=5).ids, selection.ids)
