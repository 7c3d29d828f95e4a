"""Numbers behind the reports: mean ± std, budget curves (area, labels to reach a target), paired statistics.

Pure functions on floats and on metric rows (dicts with ``strategy``, ``seed``, ``round``, ``labeled``, ``cost``
and metric columns), shared by the report and by the tasks' own report sections.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation, ignoring NaN (NaN, NaN for no values; std 0 for one)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def interpolate(pts: list[tuple[float, float]], x: float) -> float:
    """The piecewise-linear curve through sorted ``pts`` at ``x`` (its end values outside its range)."""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return pts[0][1] if x <= pts[0][0] else pts[-1][1]


def aubc(xs: list[float], ys: list[float], lo: float | None = None, hi: float | None = None) -> float:
    """Area under the budget curve, normalised by the x range: (1 / (hi - lo)) ∫_lo^hi y dx.

    The curve is the piecewise-linear interpolation of the points (the trapezoid rule), so the AUBC is the
    mean of the metric over the budget range [lo, hi] (default: the first to the last x), in the metric's units.
    A single point (hi == lo) gives its y. ``lo``/``hi`` must lie within the points' x range.
    """
    pts = sorted(zip(xs, ys))
    if not pts:
        return float("nan")
    lo = pts[0][0] if lo is None else lo
    hi = pts[-1][0] if hi is None else hi
    if lo < pts[0][0] - 1e-9 or hi > pts[-1][0] + 1e-9 or hi < lo:
        raise ValueError(f"AUBC range [{lo}, {hi}] is outside the curve's x range [{pts[0][0]}, {pts[-1][0]}]")
    if hi == lo:
        return interpolate(pts, lo)
    grid = [lo] + [x for x, _ in pts if lo < x < hi] + [hi]
    vals = [interpolate(pts, x) for x in grid]
    area = sum((grid[i + 1] - grid[i]) * (vals[i] + vals[i + 1]) / 2 for i in range(len(grid) - 1))
    return area / (hi - lo)


def labels_to_reach(xs: list[float], ys: list[float], target: float) -> float | None:
    """The smallest x at which the piecewise-linear curve first reaches ``target`` (None if it never does)."""
    pts = sorted(zip(xs, ys))
    for i, (x, y) in enumerate(pts):
        if y >= target:
            if i == 0:
                return x
            x0, y0 = pts[i - 1]
            return x0 + (x - x0) * (target - y0) / (y - y0)
    return None


def paired_stats(diffs: list[float]) -> dict:
    """Mean, sample std, paired t statistic, its two-sided p (Student t, n-1 dof), and the sign test counts."""
    d = [v for v in diffs if not math.isnan(v)]
    n = len(d)
    mean, std = mean_std(d)
    wins, losses = sum(v > 0 for v in d), sum(v < 0 for v in d)
    t = p = None
    if n >= 2 and std > 0:
        from scipy import stats

        t = mean / (std / math.sqrt(n))
        p = float(2 * stats.t.sf(abs(t), n - 1))
    k, m = min(wins, losses), wins + losses
    sign_p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m) if m else 1.0
    return {"n": n, "mean": mean, "std": std, "t": t, "p": p, "wins": wins, "ties": n - wins - losses,
            "losses": losses, "sign_p": sign_p}


def summarize(rows: list[dict], metric: str) -> dict[str, list[dict]]:
    """Per strategy, per round: mean labeled / cost, and mean ± sample std of ``metric`` over seeds."""
    groups: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        groups[row["strategy"]][int(row["round"])].append(row)
    out = {}
    for strategy, by_round in groups.items():
        out[strategy] = []
        for r in sorted(by_round):
            group = by_round[r]
            mean, std = mean_std(float(g.get(metric, float("nan"))) for g in group)
            out[strategy].append({"round": r, "labeled": mean_std(float(g["labeled"]) for g in group)[0],
                                  "cost": mean_std(float(g["cost"]) for g in group)[0],
                                  "mean": mean, "std": std, "n": len(group)})
    return out
