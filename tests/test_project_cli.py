"""The labeling workflow through the `influal` command: init / add / query / import / status, one-line refusals, and
a query killed (kill -9) at seeded random points that resumes to the same batch."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from project_utils import CLASSES, answer_csv, batch_rows, digit_folder

from influal.cli import main
from influal.project import Project

QUERY = ["--strategy", "isal", "--budget", "10", "--epochs", "3", "--batch-size", "16", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    truth = digit_folder(root, n=100)
    path = tmp_path_factory.mktemp("projects") / "p"
    assert main(["init", str(path), "--images", str(root), "--classes", ",".join(CLASSES), "--quiet"]) == 0
    assert main(["query", str(path), "--strategy", "random", "--budget", "40", "--quiet"]) == 0
    project = Project(path)
    assert main(["import", str(path), str(answer_csv(path.parent / "a.csv", batch_rows(project, 1), truth))]) == 0
    return path, root, truth


def test_the_commands_walk_a_project_through_two_rounds(started, tmp_path, capsys):
    path, root, truth = started
    shutil.copytree(path, tmp_path / "p")
    p = str(tmp_path / "p")
    capsys.readouterr()
    assert main(["query", p, *QUERY]) == 0
    out = capsys.readouterr().out
    assert "query round 2: 10 image(s) chosen by isal" in out and "accuracy on the reference set" in out
    assert "tasks.json" in out and f"influal import {p}" in out
    assert main(["status", p, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["labeled"] == {"train": 32, "val": 8} and status["pending"]["train"] == 10
    assert main(["status", p]) == 0
    text = capsys.readouterr().out
    assert "labeled 32 for training, 8 for reference" in text and "round  strategy" in text
    assert main(["add", p]) == 0
    assert "added 0 new image(s) (100 in all)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["query", "{p}", "--strategy", "nope", "--budget", "5"], "unknown strategy"),
    (["query", "{p}", "--strategy", "isal", "--budget", "0"], "--budget must be an integer >= 1"),
    (["query", "{p}", "--strategy", "isal", "--budget", "5", "--val-share", "1.5"], "--val-share must lie in"),
    (["query", "{p}", "--strategy", "isal", "--budget", "5", "--model", "nope"], "unknown classification model"),
    (["query", "{p}", "--strategy", "isal", "--budget", "5", "--no-train", "--epochs", "3"], "drop the training flags"),
    (["query", "{p}", "--strategy", "isal", "--budget", "5", "--weights", "/nowhere.pt"], "does not exist"),
    (["query", "{p}", "--strategy", "isal", "--budget", "5", "--score-threshold", "0.2"], "only apply to --task"),
    (["query", "{tmp}", "--strategy", "isal", "--budget", "5"], "is missing; is"),
    (["init", "{p}", "--images", "{tmp}", "--classes", "a,b"], "already exists and is not empty"),
    (["import", "{p}", "{tmp}/none.csv"], "does not exist"),
])
def test_mistakes_are_one_line_and_change_nothing(started, tmp_path, capsys, argv, message):
    path, _, _ = started
    shutil.copytree(path, tmp_path / "p")
    before = {f: (tmp_path / "p" / f).read_bytes() for f in ("project.json", "images.json", "labels.json")}
    argv = [a.format(p=tmp_path / "p", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("influal: error: ") and message in err[0], err
    assert {f: (tmp_path / "p" / f).read_bytes() for f in before} == before
    assert not (tmp_path / "p" / "queries" / "2").exists()


def _influal(args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("INFLUAL_FAULT")}
    full.update(OMP_NUM_THREADS="1", INFLUAL_QUIET="1", **env)
    return subprocess.run([sys.executable, "-m", "influal", *args], env=full, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_query_killed_at_random_points_resumes_to_the_same_batch(started, tmp_path):
    path, _, _ = started
    reference = tmp_path / "reference"
    shutil.copytree(path, reference)
    log = tmp_path / "points.log"
    done = _influal(["query", str(reference), *QUERY], INFLUAL_FAULT_AT="0", INFLUAL_FAULT_LOG=str(log))
    assert done.returncode == 0, done.stderr
    points = log.read_text().splitlines()
    kinds = {line.split(" ", 1)[1] for line in points}
    assert any(k.startswith("training") for k in kinds) and any(k.startswith("scoring") for k in kinds)
    assert "after a query's training" in kinds and "after a query's selection" in kinds
    expected = {name: (reference / "queries" / "2" / name).read_bytes() for name in ("batch.csv", "tasks.json")}
    labels = (reference / "labels.json").read_bytes()
    chosen = sorted(random.Random(11).sample(range(1, len(points) + 1), 3))
    for n in chosen:
        work = tmp_path / f"kill{n}"
        shutil.copytree(path, work)
        killed = _influal(["query", str(work), *QUERY], INFLUAL_FAULT_AT=str(n))
        assert killed.returncode == -9, (n, points[n - 1], killed.stderr[-500:])
        again = _influal(["query", str(work), *QUERY])
        assert again.returncode == 0, (n, again.stderr[-2000:])
        got = {name: (work / "queries" / "2" / name).read_bytes() for name in expected}
        assert got == expected, f"killed at point {n} ({points[n - 1]}), the resumed batch differs"
        assert (work / "labels.json").read_bytes() == labels
        assert not (work / "queries" / "3").exists()
