"""Run (or resume) a whole experiment and keep its reports current: the loop plus the report layer."""

from __future__ import annotations

from pathlib import Path

from ..api import DatasetSplits
from ..core import dist
from ..loop.config import ExperimentConfig
from ..loop.experiment import Experiment, Log, ModelFactory
from ..loop.state import ActiveState
from ..report import RoundReport, write_reports


def run_prepared(experiment: Experiment, *, progress: bool = False, log: Log | None = None
                 ) -> dict[tuple[str, int], ActiveState]:
    """Run a prepared experiment; metrics.csv and report.md after every round, curves.png at the end."""
    out = experiment.out
    report = []  # made at the first round: config.json is written when the run starts

    def on_round(_experiment) -> None:
        if not report:
            report.append(RoundReport(out))
        report[0].write(plots=False)

    states = experiment.run(progress=progress, log=log, on_round=on_round)
    if dist.is_main():  # under torch.distributed rank 0 alone writes the reports
        write_reports(out)
    return states


def run_experiment(config: ExperimentConfig, out: str | Path, *, splits: DatasetSplits | None = None,
                   model_factory: ModelFactory | None = None, progress: bool = False,
                   log: Log | None = None) -> dict[tuple[str, int], ActiveState]:
    """Run (or resume) a whole experiment and write its results under ``out``. See :class:`Experiment`."""
    experiment = Experiment.prepare(config, out, splits=splits, model_factory=model_factory)
    return run_prepared(experiment, progress=progress, log=log)
