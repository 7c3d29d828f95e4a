"""Faults: kill -9 at seeded random points (inside writes, training, scoring, between rounds) always resumes to the
uninterrupted result; SIGTERM stops with one line; a stray temporary file or a stale lock never blocks a folder;
two runs cannot share one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from influal.cli import main
from influal.core.errors import StateError
from influal.core.lock import LOCK_NAME, FolderLock

RUN = ["run", "--dataset", "mnist5k", "--strategies", "random,isal", "--initial", "20", "--budget", "10", "--rounds",
       "3", "--seeds", "1", "--epochs", "2", "--val-size", "50", "--test-size", "100", "--device", "cpu", "--quiet"]
KILLS = 20


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUAL_FAULT")}
    env.update(OMP_NUM_THREADS="1", INFLUAL_QUIET="1", **extra)
    return env


def _influal(args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "influal", *args], env=_env(**env), capture_output=True, text=True,
                          timeout=300)


def _outcome(out: Path) -> dict:
    """What a run computed: every round's selection, metrics and cost, per strategy and seed."""
    result = {}
    for path in sorted(out.glob("runs/*/seed*/state.json")):
        data = json.loads(path.read_text())
        result[str(path.relative_to(out))] = [(r["round"], r["selected"], r["metrics"], r["cost"])
                                              for r in data["rounds"]]
    return result


@pytest.mark.slow
def test_kill_at_seeded_random_points_always_resumes_to_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    log = tmp_path / "points.log"
    done = _influal(RUN + ["--out", str(reference)], INFLUAL_FAULT_AT="0", INFLUAL_FAULT_LOG=str(log))
    assert done.returncode == 0, done.stderr
    points = log.read_text().splitlines()
    kinds = {line.split(" ", 1)[1].split(" ")[0] for line in points}
    assert {"training", "scoring", "before", "after"} <= kinds  # writes, training, scoring and between rounds
    expected = _outcome(reference)
    assert expected and all(len(rounds) == 3 for rounds in expected.values())
    rng = random.Random(2026)
    chosen = sorted(rng.sample(range(1, len(points) + 1), KILLS))
    for k in chosen:
        out = tmp_path / f"killed{k}"
        killed = _influal(RUN + ["--out", str(out)], INFLUAL_FAULT_AT=str(k))
        assert killed.returncode == -signal.SIGKILL, (k, points[k - 1], killed.stderr[-500:])
        # the same command, in this process this time, finishes the run
        assert main(RUN + ["--out", str(out)]) == 0, (k, points[k - 1])
        assert _outcome(out) == expected, (k, points[k - 1])
        assert not list(out.rglob(".*.tmp")) and not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_sigterm_stops_with_one_line_and_the_run_resumes(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "influal", *RUN, "--out", str(out)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob("runs/*/seed0/state.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first round was saved"
    proc.send_signal(signal.SIGTERM)  # five more rounds are to come: the run is still busy
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == ("influal: stopped by SIGTERM; run the same command again to resume from "
                                            "the last complete round")
    assert not (out / LOCK_NAME).exists()
    assert main(RUN + ["--out", str(out)]) == 0
    straight = tmp_path / "straight"
    assert main(RUN + ["--out", str(straight)]) == 0
    assert _outcome(out) == _outcome(straight)


def test_a_stray_temporary_file_from_a_killed_first_write_does_not_block_the_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".config.json.abc123.tmp").write_text('{"half": ')
    argv = ["run", "--dataset", "mnist5k", "--strategies", "random", "--initial", "20", "--budget", "10", "--rounds",
            "2", "--seeds", "1", "--epochs", "1", "--val-size", "50", "--test-size", "100", "--out", str(out)]
    assert main(argv) == 0
    assert not list(out.rglob(".*.tmp"))
    assert "removed 1 temporary file" in capsys.readouterr().err


def test_two_runs_cannot_share_a_folder_and_a_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(StateError, match=f"in use by another influal run \\(pid {sleeper.pid}"):
            FolderLock(out).acquire()
        assert main(RUN + ["--out", str(out)]) == 2  # refused before anything is written
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        sleeper.kill()
        sleeper.wait()
    messages = []
    with FolderLock(out, messages.append):  # the owner is gone: its lock is stale
        assert (out / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert "taking over the stale lock" in messages[0] and not (out / LOCK_NAME).exists()
