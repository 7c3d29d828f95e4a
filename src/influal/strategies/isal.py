"""ISAL: pick the items whose addition (with a pseudo-label) is predicted to lower the reference loss most."""

from __future__ import annotations

import torch

from ..config import InfluenceConfig
from ..errors import ConfigError
from ..influence.score import InfluenceEngine
from .base import Selection, SelectionContext, check_budget, take_lowest


class ISALStrategy:
    """Influence Selection for Active Learning (Liu et al., ICCV 2021).

    Scores every unlabeled item by I(z) = -g_z(ŷ)·s_test with s_test ≈ (H + λI)^-1 v, v the summed gradient of
    the reference (validation) loss, and takes the ``budget`` lowest. ``config`` overrides the context's
    influence settings.
    """

    name = "isal"

    def __init__(self, config: InfluenceConfig | None = None):
        self.config = config

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        if ctx.reference is None or ctx.reference_ids is None or len(ctx.reference_ids) == 0:
            raise ConfigError("ISAL needs a reference set (a validation split); none was given")
        if len(ctx.labeled_ids) == 0:
            raise ConfigError("ISAL needs a non-empty labeled set to estimate the Hessian")
        cfg = self.config or ctx.influence
        ref_ids = ctx.reference_ids
        if cfg.reference_size is not None and cfg.reference_size < len(ref_ids):
            pick = torch.randperm(len(ref_ids), generator=ctx.generator)[:cfg.reference_size].numpy()
            ref_ids = ref_ids[pick]
        engine = InfluenceEngine(ctx.model, ctx.task, cfg)
        result = engine.run(ctx.pool, ctx.labeled_ids, ctx.unlabeled_ids, ctx.reference, ref_ids, ctx.generator,
                            progress=ctx.progress)
        chosen = take_lowest(result.ids, result.scores, budget)
        info = result.summary()
        info.update({k: round(v, 4) for k, v in result.timings.items()})
        ctx.extras["influence"] = result
        return Selection(chosen, result.scores, info)

