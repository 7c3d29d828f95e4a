"""The redesign changed no result: small classification and detection runs give exactly the selections, costs
and metrics that influal 0.1 (commit cf8a757, before the task plug-ins) recorded in tests/data/golden_v01_*.json.

Float results are bit-identical on one machine but may differ slightly across CPU families (MKL kernels), which
can flip a near-tied pick; the goldens name the CPU they were recorded on, and the check is skipped elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from influal.cli import main

from detection_utils import one_thread

DATA = Path(__file__).parent / "data"
COMMANDS = {
    "cls": ["--dataset", "mnist5k", "--model", "cnn", "--strategies",
            "isal,random,coreset,entropy,margin,badge,bald,learning_loss", "--initial", "40", "--budget", "20",
            "--rounds", "3", "--seeds", "1", "--epochs", "3", "--val-size", "100", "--test-size", "200"],
    "det": ["--task", "detection", "--strategies", "isal,random,localization_stability,det_coreset", "--image-size",
            "48", "--pool-size", "24", "--val-size", "6", "--test-size", "8", "--initial", "6", "--budget", "4",
            "--rounds", "3", "--seeds", "1", "--epochs", "2", "--lissa-depth", "5", "--lissa-repeats", "1"],
}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_selections_and_metrics_equal_influal_0_1(tmp_path, kind):
    golden = json.loads((DATA / f"golden_v01_{kind}.json").read_text())
    if golden["cpu"] != _cpu():
        pytest.skip(f"goldens recorded on {golden['cpu']!r}; this CPU is {_cpu()!r} (float rounding differs)")
    out = tmp_path / "out"
    argv = ["run", *COMMANDS[kind], "--device", "cpu", "--data-root", str(tmp_path / "data")] if kind == "det" \
        else ["run", *COMMANDS[kind], "--device", "cpu"]
    with one_thread():
        assert main(argv + ["--out", str(out), "--quiet"]) == 0
    for strategy, rounds in golden["runs"].items():
        state = json.loads((out / "runs" / strategy / "seed0" / "state.json").read_text())
        got = [{"round": r["round"], "cost": r["cost"], "metrics": r["metrics"], "selected": r["selected"]}
               for r in state["rounds"]]
        assert got == rounds, strategy
