"""ISAL: pick the items whose addition (with a pseudo-label) is predicted to lower the reference loss most."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..api import REFERENCE_SET, Selection, SelectionContext, Strategy, check_budget, take_lowest
from ..core.errors import ConfigError
from ..influence.engine import InfluenceEngine
from ..settings import INFLUENCE_PRESETS, InfluenceConfig


class ISALStrategy(Strategy):
    """Influence Selection for Active Learning (Liu et al., ICCV 2021).

    Scores every unlabeled item by I(z) = -g_z(ŷ)·s_test with s_test ≈ (H + λI)^-1 v, v the summed gradient of
    the reference (validation) loss, and takes the ``budget`` lowest. Settings are those of
    :class:`~influal.settings.InfluenceConfig` (``make_strategy("isal", solver="cg", damping=0.01)``), on top of
    ``preset`` (``"paper"``: the official constants) or of a whole ``config``.
    """

    name = "isal"
    requires = frozenset({REFERENCE_SET})
    shards = True  # the engine shards v, the Hessian products (or LiSSA's chains) and the scoring pass

    def __init__(self, config: InfluenceConfig | None = None, *, preset: str | None = None, **settings: Any):
        if preset is not None and preset not in INFLUENCE_PRESETS:
            raise ConfigError(f"unknown influence preset {preset!r}; choose {', '.join(INFLUENCE_PRESETS)}")
        if config is not None and not isinstance(config, InfluenceConfig):
            raise ConfigError(f"isal's config must be an InfluenceConfig, got {type(config).__name__}")
        base = INFLUENCE_PRESETS[preset] if preset is not None else (config or InfluenceConfig())
        try:
            self.config = base.replace(**settings) if settings else base
        except TypeError:
            known = ", ".join(f for f in InfluenceConfig().to_dict())
            unknown = ", ".join(sorted(set(settings) - set(InfluenceConfig().to_dict())))
            raise ConfigError(f"strategy 'isal' does not take the setting(s) {unknown}; its settings are {known}"
                              ) from None
        self._explicit = config is not None or preset is not None or bool(settings)

    def settings(self) -> dict[str, Any]:
        return self.config.to_dict()

    def check(self, task, model) -> None:
        """Resolve the settings on a fresh model now, so a scope or solver the task cannot serve fails at start."""
        super().check(task, model)
        InfluenceEngine(model, task, self.config)

    def resolve(self, ctx: SelectionContext) -> InfluenceConfig:
        if not self._explicit and ctx.influence is not None:
            warnings.warn("SelectionContext.influence is deprecated; pass the settings to the strategy "
                          "(make_strategy('isal', scope=..., solver=...))", DeprecationWarning, stacklevel=3)
            return ctx.influence
        return self.config

    def select(self, ctx: SelectionContext, budget: int) -> Selection:
        check_budget(ctx, budget)
        result = self.influence(ctx)
        return Selection(take_lowest(result.ids, result.scores, budget), result.scores, self.summary(result))

    @staticmethod
    def summary(result) -> dict[str, Any]:
        """What the round records of an influence pass: the solve's summary and the phases' seconds."""
        info = result.summary()
        info.update({k: round(v, 4) for k, v in result.timings.items()})
        return info

    def influence(self, ctx: SelectionContext):
        """Every candidate's influence score (an :class:`~influal.influence.engine.InfluenceResult`, also left in
        ``ctx.extras["influence"]``)."""
        if ctx.reference is None or ctx.reference_ids is None or len(ctx.reference_ids) == 0:
            raise ConfigError("ISAL needs a reference set (a validation split); none was given")
        if len(ctx.labeled_ids) == 0:
            raise ConfigError("ISAL needs a non-empty labeled set to estimate the Hessian")
        cfg = self.resolve(ctx)
        ref_ids = ctx.reference_ids
        if cfg.reference_size is not None and cfg.reference_size < len(ref_ids):
            pick = torch.randperm(len(ref_ids), generator=ctx.generator)[:cfg.reference_size].numpy()
            ref_ids = ref_ids[pick]
        engine = InfluenceEngine(ctx.model, ctx.task, cfg)
        result = engine.run(ctx.pool, ctx.labeled_ids, ctx.unlabeled_ids, ctx.reference, ref_ids, ctx.generator,
                            progress=ctx.progress)
        ctx.extras["influence"] = result
        return result
