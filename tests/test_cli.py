"""The command line: a real run on the offline data, and one clear line with exit 2 for each bad input."""

import json

import pytest

from influal.cli import main

FAST = ["--epochs", "3", "--quiet", "--lissa-depth", "10", "--lissa-repeats", "1"]


def _fails(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("influal: error:")
    assert message in err
    return err


def test_run_and_report_on_offline_mnist(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["run", "--dataset", "mnist5k", "--model", "cnn", "--strategies", "isal,random", "--initial", "40",
            "--budget", "20", "--rounds", "2", "--seeds", "1", "--out", str(out)] + FAST
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| isal |" in printed and "| random |" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["strategies"] == ["isal", "random"] and config["train"]["epochs"] == 3
    # running the finished experiment again resumes: nothing to do, same report
    assert main(argv) == 0
    assert main(["report", str(out)]) == 0
    assert "| isal |" in capsys.readouterr().out
    # the self-check rebuilds the saved run's last model exactly and compares solvers with the exact solve
    assert main(["check-influence", str(out), "--seed", "0", "--solvers", "cg,identity"]) == 0
    printed = capsys.readouterr().out
    assert "reproduced exactly: yes" in printed
    assert "cg:" in printed and "-> accurate" in printed.split("cg:")[1].splitlines()[0]
    _fails(capsys, ["check-influence", str(out), "--solvers", "newton"], "unknown solver")


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "imagenet"], "unknown classification dataset 'imagenet'"),
    (["--model", "vgg"], "unknown classification model 'vgg'"),
    (["--strategies", "isal,psychic"], "unknown strategy"),
    (["--budget", "5000"], "exceeds the pool"),
    (["--initial", "4000"], "exceeds the pool"),
    (["--rounds", "0"], "rounds must be"),
    (["--seeds", "0"], "seeds must be"),
    (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], "is not a folder"),
    (["--dataset", "svhn"], "--data-root"),
    (["--solver", "magic"], "influence.solver"),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    _fails(capsys, ["run", "--out", str(out)] + FAST + extra, message)
    assert not out.exists()


def test_malformed_data_folder(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(b"garbage")
    out = tmp_path / "out"
    _fails(capsys, ["run", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(out)] + FAST,
           "not a readable CIFAR-10")
    assert not out.exists()


def test_output_folder_of_another_experiment(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"dataset": "mnist5k", "budget": 7}))
    before = sorted(p.name for p in out.iterdir())
    _fails(capsys, ["run", "--out", str(out)] + FAST, "different experiment")
    assert sorted(p.name for p in out.iterdir()) == before


def test_report_without_results(tmp_path, capsys):
    _fails(capsys, ["report", str(tmp_path)], "does not exist")
