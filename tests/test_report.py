"""Report numbers on a hand-made metrics.csv whose answers are worked out by hand below.

Curves (accuracy at 100 / 200 / 300 labels), three seeds:
    random  seed0 .50 .60 .70   seed1 .50 .62 .72   seed2 .50 .58 .68   mean .50 .60 .70
    isal    seed0 .50 .65 .75   seed1 .50 .66 .74   seed2 .50 .64 .76   mean .50 .65 .75
AUBC (trapezoid over 100..300, divided by 200):
    random  (55 + 65)/200 = .600, (56 + 67)/200 = .615, (54 + 63)/200 = .585   mean .600
    isal    (57.5 + 70)/200 = .6375, (58 + 70)/200 = .640, (57 + 70)/200 = .635 mean .6375
Paired AUBC differences .0375, .025, .050: mean .0375, std .0125, t = .0375 / (.0125/√3) = 3√3, 3 wins.
Labels to reach random's final mean .70: random 300, isal 200 + 100·(.05/.10) = 250, saving 50/300 = 16.7 %.
Labels to reach .60: random 200, isal 100 + 100·(.10/.15) = 166.7, saving 16.7 %.
"""

import math

import pytest

from influal.cli import main
from influal.report import (
    aubc,
    aubc_by_seed,
    labels_to_reach,
    paired_comparison,
    paired_stats,
    parse_target,
    read_metrics_csv,
    savings,
    summarize,
)

CURVES = {"random": [(.50, .60, .70), (.50, .62, .72), (.50, .58, .68)],
          "isal": [(.50, .65, .75), (.50, .66, .74), (.50, .64, .76)]}


@pytest.fixture
def results(tmp_path):
    lines = ["strategy,seed,round,labeled,cost,accuracy,loss"]
    for strategy, per_seed in CURVES.items():
        for seed, accs in enumerate(per_seed):
            for r, acc in enumerate(accs):
                lines.append(f"{strategy},{seed},{r},{100 * (r + 1)},{100.0 * (r + 1)},{acc},0.5")
    (tmp_path / "metrics.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_aubc_is_the_mean_metric_over_the_budget_range():
    assert aubc([100, 200, 300], [.5, .6, .7]) == pytest.approx(.6)
    assert aubc([0, 10, 40], [0, 1, 1]) == pytest.approx((5 + 30) / 40)  # uneven spacing
    assert aubc([0, 10, 40], [0, 1, 1], lo=5, hi=20) == pytest.approx((0.75 * 5 + 10) / 15)  # interpolated ends
    assert aubc([100], [.4]) == pytest.approx(.4)
    with pytest.raises(ValueError):
        aubc([0, 10], [0, 1], hi=20)


def test_labels_to_reach_interpolates_the_first_crossing():
    assert labels_to_reach([100, 200, 300], [.5, .65, .75], .70) == pytest.approx(250)
    assert labels_to_reach([100, 200, 300], [.5, .65, .75], .40) == 100
    assert labels_to_reach([100, 200, 300], [.5, .8, .6], .70) == pytest.approx(100 + 100 * .2 / .3)
    assert labels_to_reach([100, 200], [.5, .6], .9) is None


def test_aubc_savings_and_paired_comparison_on_a_hand_made_csv(results):
    rows = read_metrics_csv(results / "metrics.csv")
    per_seed, (lo, hi) = aubc_by_seed(rows, "accuracy")
    assert (lo, hi) == (100, 300)
    assert [per_seed["random"][s] for s in range(3)] == pytest.approx([.600, .615, .585])
    assert [per_seed["isal"][s] for s in range(3)] == pytest.approx([.6375, .640, .635])

    summary = summarize(rows, "accuracy")
    saved = savings(summary, .70)
    assert saved["random"]["labels"] == pytest.approx(300) and saved["random"]["saving_pct"] == pytest.approx(0)
    assert saved["isal"]["labels"] == pytest.approx(250)
    assert saved["isal"]["saving_pct"] == pytest.approx(100 / 6)
    saved = savings(summary, .60)
    assert saved["isal"]["labels"] == pytest.approx(100 + 100 * .10 / .15)
    assert saved["isal"]["saving_pct"] == pytest.approx(100 / 6)
    assert savings(summary, .95)["isal"] == {"labels": None, "saving_pct": None}

    paired = paired_comparison(rows, "accuracy")
    assert set(paired) == {"isal"}
    st = paired["isal"]["aubc"]
    assert st["mean"] == pytest.approx(.0375) and st["std"] == pytest.approx(.0125)
    assert st["t"] == pytest.approx(3 * math.sqrt(3))
    assert (st["wins"], st["ties"], st["losses"]) == (3, 0, 0)
    assert st["sign_p"] == pytest.approx(0.25)
    assert 0 < st["p"] < 0.05  # t = 5.196 on 2 dof: p = 0.0351
    first, second = paired["isal"]["rounds"][0], paired["isal"]["rounds"][1]
    assert (first["mean"], first["ties"], first["t"]) == (0.0, 3, None)
    assert second["mean"] == pytest.approx(.05) and second["wins"] == 3


def test_paired_stats_sign_test_and_t_by_hand():
    st = paired_stats([1.0, -1.0, 2.0, 0.0])
    assert (st["wins"], st["ties"], st["losses"]) == (2, 1, 1)
    assert st["mean"] == pytest.approx(0.5)
    assert st["t"] == pytest.approx(0.5 / (math.sqrt(5 / 3) / 2))
    assert st["sign_p"] == pytest.approx(1.0)  # 2 wins, 1 loss: P(X <= 1 | n=3) * 2 = 1
    assert paired_stats([0.1] * 6)["sign_p"] == pytest.approx(2 / 64)


def test_parse_target_accepts_fractions_and_percent():
    assert parse_target(0.9) == 0.9 and parse_target(90) == pytest.approx(0.9) and parse_target(None) is None


def test_influal_report_regenerates_everything_from_metrics_csv(results, capsys):
    assert main(["report", str(results), "--target", "60"]) == 0
    text = (results / "report.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert (results / "curves.png").stat().st_size > 1000
    assert "| random | 60.00 ± 1.50 |" in text  # AUBC mean ± std over seeds
    assert "| isal | 63.75 ± 0.25 | +3.75 ± 1.25 | 5.20 | 0.035 | 3/0/0 |" in text
    assert "## Labels to reach accuracy 60.00%" in text
    assert "| isal | 167 | +16.7% |" in text and "| random | 200 | +0.0% |" in text
    assert "| isal | +0.00 (0/3/0) | +5.00 (3/0/0) | +5.00 (3/0/0) |" in text
    # the default target is random's final mean
    assert main(["report", str(results)]) == 0
    assert "| isal | 250 | +16.7% |" in (results / "report.md").read_text()


def test_the_round_report_rereads_only_changed_states_and_writes_what_write_reports_writes(tmp_path, monkeypatch):
    """After each round the run's report re-reads only the state that changed (by size and mtime), and its
    metrics.csv and report.md are those write_reports makes from every state."""
    import influal.report as report
    from influal import ExperimentConfig, run_experiment
    from influal.report import RoundReport, write_reports
    from influal.settings import TrainConfig

    config = ExperimentConfig(strategies=("random", "margin"), initial=20, budget=10, rounds=3, seeds=2,
                              val_size=40, test_size=80, device="cpu", train=TrainConfig.preset("fast").replace(epochs=1))
    out = tmp_path / "out"
    run_experiment(config, out)
    reads = []
    real = report._state_rows
    monkeypatch.setattr(report, "_state_rows", lambda path, *a: reads.append(path.parent.parent.name + path.parent.name)
                        or real(path, *a))
    live = RoundReport(out)
    text = live.write()
    assert len(reads) == 4  # every state once, at the first call
    csv_bytes = (out / "metrics.csv").read_bytes()
    assert live.write() == text and len(reads) == 4  # nothing changed: nothing re-read
    state = out / "runs" / "margin" / "seed1" / "state.json"
    state.write_bytes(state.read_bytes())  # a new mtime, as a round's save gives
    import os

    os.utime(state, ns=(state.stat().st_atime_ns, state.stat().st_mtime_ns + 1_000_000))
    live.write()
    assert reads[4:] == ["marginseed1"]
    assert write_reports(out, plots=False) == text and (out / "metrics.csv").read_bytes() == csv_bytes
