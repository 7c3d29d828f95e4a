"""The solver self-check: a correct solver is judged accurate, a solver broken on purpose is not."""

import numpy as np
import torch
from conftest import blob_splits, mlp_model

from influal.influence.check import check_solvers, verdict
from influal.influence.solvers import ConjugateGradient, SolveResult
from influal.settings import InfluenceConfig
from influal.tasks.classification import ClassificationTask


class BrokenSolver:
    """Returns s = v with a random perturbation as large as v: a wrong inverse."""

    name = "broken"

    def solve(self, op, v, generator):
        noise = torch.randn(v.shape, generator=torch.Generator().manual_seed(7))
        return SolveResult(v + noise * v.norm() / noise.norm() * 3, self.name, 0.0)


def _trained():
    splits = blob_splits(pool=160, val=40, test=20)
    model = mlp_model()
    task = ClassificationTask(3)
    labeled = np.arange(60)
    task.train(model, splits.pool, labeled, __import__("influal").TrainConfig.preset("fast"),
               torch.Generator().manual_seed(0))
    return splits, model, task, labeled, np.arange(60, 160)


def test_verdict_flips_for_a_wrong_solver():
    splits, model, task, labeled, unlabeled = _trained()
    header, rows = check_solvers(model, task, splits.pool, labeled, unlabeled, splits.val, np.arange(40), budget=10,
                                 solvers={"cg": ConjugateGradient(0.01, 300, 1e-10),
                                          "cg-config": InfluenceConfig(solver="cg", damping=0.01, cg_tol=1e-10,
                                                                       cg_max_iter=300),
                                          "broken": BrokenSolver()})
    by_name = {r.name: r for r in rows}
    assert header["params"] == 8 * 3 + 3
    assert by_name["cg"].verdict == "accurate" and by_name["cg"].relative_error < 1e-4
    assert by_name["cg-config"].verdict == "accurate"
    assert by_name["broken"].verdict == "unreliable"
    assert by_name["broken"].relative_error > 0.5


def test_verdict_thresholds():
    assert verdict(1.0, 1.0, 1.0) == "accurate"
    assert verdict(0.99, 0.99, 0.92) == "ranking-equivalent"
    assert verdict(0.9, 0.93, 0.75) == "approximate"
    assert verdict(0.9, 0.7, 0.9) == "unreliable"
