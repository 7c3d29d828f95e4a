"""Detection-only baselines: localization stability and learning loss on FPN features.

Both follow the shared strategy contract (``select(ctx, budget) -> Selection``, lower score = select first, every
random choice from ``ctx.generator``) and require the ``detections`` capability, so a classification run refuses
them at start. Random, ISAL and core-set (on ``task.features``: the pooled head features) serve detection
unchanged from :mod:`influal.strategies`; ``det_coreset`` is core-set's old name.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ...api import DETECTIONS, Selection, SelectionContext, Strategy, check_budget, take_lowest
from ...core.errors import ConfigError
from ...core.torch_utils import eval_mode
from ...strategies.kernels import LossPredictionModule, margin_ranking_loss
from .boxes import max_iou

# imagecorruptions' gaussian_noise severities 1..5 (std on the 0..1 scale), what the official code's
# ``--noise-severity`` applied.
NOISE_LEVELS = (0.08, 0.12, 0.18, 0.26, 0.38)


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


# ---------------------------------------------------------------------------------------------- localization stability
def stability(reference: dict[str, torch.Tensor], noisy: Sequence[dict[str, torch.Tensor]],
              score_threshold: float = 0.0) -> float:
    """Kao et al.'s localization stability of one image.

    ``Σ_j w_j · mean_levels(max_k IoU(ref_j, noisy_k)) / Σ_j w_j`` over the clean detections ``ref_j`` with
    score ``w_j >= score_threshold``; a noise level with no detection contributes 0 to the mean. An image with
    no reference detection has nothing to be unstable about and scores 1 (it is ranked last).
    """
    keep = reference["scores"] >= score_threshold
    boxes, weights = reference["boxes"][keep], reference["scores"][keep].float()
    if len(boxes) == 0 or float(weights.sum()) <= 0:
        return 1.0
    per_level = []
    for det in noisy:
        k = det["scores"] >= score_threshold
        per_level.append(max_iou(boxes, det["boxes"][k]))
    mean_iou = torch.stack(per_level).mean(0) if per_level else torch.zeros(len(boxes))
    return float((weights.cpu() * mean_iou.cpu()).sum() / weights.sum().cpu())


def add_gaussian_noise(images: list[torch.Tensor], std: float, generator: torch.Generator) -> list[torch.Tensor]:
    """``clip(x + N(0, std²), 0, 1)`` per image, noise drawn on the CPU from ``generator``."""
    out = []
    for im in images:
        noise = torch.randn(im.shape, generator=generator) * std
        out.append((im + noise.to(im.device)).clamp_(0.0, 1.0))
    return out


class LocalizationStability(Strategy):
    """Select the images whose boxes move most under Gaussian noise (lowest stability first)."""

    name = "localization_stability"
    requires = frozenset({DETECTIONS})

    def __init__(self, noise_levels: Sequence[float] = NOISE_LEVELS, score_threshold: float = 0.0):
        if not noise_levels or any(s <= 0 for s in noise_levels):
            raise ConfigError(f"noise_levels must be positive standard deviations, got {list(noise_levels)}")
        self.noise_levels = tuple(float(s) for s in noise_levels)
        self.score_threshold = score_threshold

    def scores(self, ctx: SelectionContext, ids: np.ndarray) -> np.ndarray:
        self.check_task(ctx.task)
        task = ctx.task
        noise_gen = torch.Generator().manual_seed(_seed_from(ctx.generator))
        out = []
        with eval_mode(ctx.model):
            for _, images, _ in task.batches(ctx.pool, ids, task.batch_size):
                clean = ctx.model.detect(images)
                noisy = [ctx.model.detect(add_gaussian_noise(images, std, noise_gen)) for std in self.noise_levels]
                out.extend(stability(clean[i], [level[i] for level in noisy], self.score_threshold)
                           for i in range(len(images)))
        return np.asarray(out, dtype=np.float64)

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        scores = self.scores(ctx, ctx.unlabeled_ids)
        return Selection(take_lowest(ctx.unlabeled_ids, scores, budget), scores,
                         {"noise_levels": list(self.noise_levels)})


# ---------------------------------------------------------------------------------------------- learning loss
class DetectionLearningLoss(Strategy):
    """Learning loss on the FPN features, detached from the detector (supplement §4).

    The module is trained after the detector, on the labeled images: inputs are the trained detector's pooled
    FPN features, targets its per-image training losses. (The supplement trains it alongside the detector with
    its gradient stopped; with the features detached the detector is the same either way, but the module here
    only sees the final detector, not the whole training trajectory.) The unlabeled images with the largest
    predicted loss are selected.
    """

    name = "det_learning_loss"
    requires = frozenset({DETECTIONS})

    def __init__(self, epochs: int = 100, batch_size: int = 32, lr: float = 1e-3, margin: float = 1.0,
                 width: int = 128):
        self.epochs, self.batch_size, self.lr, self.margin, self.width = epochs, batch_size, lr, margin, width

    @staticmethod
    def pooled_features(ctx: SelectionContext, ids: np.ndarray, with_losses: bool = False):
        task = ctx.task
        feats, losses = [], []
        with eval_mode(ctx.model):
            for _, images, targets in task.batches(ctx.pool, ids, task.batch_size):
                levels = ctx.model.fpn_features(images)
                feats.append(torch.stack([f.mean(dim=(2, 3)) for f in levels], dim=1).cpu())
                if with_losses:
                    with torch.no_grad():
                        losses.append(task.loss(ctx.model, images, targets).cpu())
        pooled = torch.cat(feats)
        return (pooled, torch.cat(losses)) if with_losses else pooled

    def fit(self, pooled: torch.Tensor, losses: torch.Tensor, generator: torch.Generator) -> LossPredictionModule:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_from(generator))
            module = LossPredictionModule([pooled.shape[2]] * pooled.shape[1], self.width)
        optimizer = torch.optim.Adam(module.parameters(), lr=self.lr)
        n = len(pooled)
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - 1, self.batch_size):
                batch = order[start:start + self.batch_size]
                if len(batch) < 2:
                    continue
                loss = margin_ranking_loss(module(_levels(pooled[batch])), losses[batch], self.margin)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return module.eval()

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        self.check_task(ctx.task)
        pooled, losses = self.pooled_features(ctx, ctx.labeled_ids, with_losses=True)
        module = self.fit(pooled, losses, ctx.generator)
        with torch.no_grad():
            predicted = module(_levels(self.pooled_features(ctx, ctx.unlabeled_ids))).double().numpy()
        scores = -predicted
        return Selection(take_lowest(ctx.unlabeled_ids, scores, budget), scores,
                         {"labeled_loss_mean": float(losses.mean())})


def _levels(pooled: torch.Tensor) -> list[torch.Tensor]:
    """[n, levels, C] pooled FPN features -> one [n, C] tensor per level (the module's branches)."""
    return [pooled[:, k] for k in range(pooled.shape[1])]


DETECTION_STRATEGIES = {
    "localization_stability": LocalizationStability,
    "det_learning_loss": DetectionLearningLoss,
}
"""Strategies that only make sense for detection (registered in :data:`influal.strategies.STRATEGIES`)."""
