"""ISAL's selection over 1 and 2 torch.distributed ranks (gloo, CPU) on synthetic pools streamed from ids, never
materialised: throughput, and the peak memory of each rank as the pool grows.

    python -m benchmarks.distributed [--sizes 100000,1000000] [--image-size 16]

Each configuration is a fresh job: ``1 rank × 2 threads``, ``1 rank × 1 thread`` and ``2 ranks × 1 thread`` (the
machine has 2 cores: with 2 ranks each gets one). The pool is a data set whose ``get_batch(ids)`` computes each
image from its id (a fixed random pattern per class plus id-seeded noise), so nothing of the pool is stored; the
model is the small CNN (random init, seed 0; a trained model costs the same to score); 500 labeled items and a
reference set of 200; ISAL with the default scope (the last layer) and CG, budget 100. Each rank reports its
phase times (v, s_test, scoring) and its peak resident memory (``ru_maxrss``). Results: JSON in
benchmarks/results/distributed.json and a table on stdout (the figures in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"


class StreamedPool:
    """``n`` synthetic 1-channel images of ``size`` px computed from their ids on demand (label = id mod 10)."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size
        gen = torch.Generator().manual_seed(0)
        self.patterns = torch.randn(10, 1, size, size, generator=gen)

    def __len__(self) -> int:
        return self.n

    def get_batch(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
        y = ids % 10
        # id-seeded noise without a generator per item: a cheap hash of (id, pixel)
        pix = torch.arange(self.size * self.size, dtype=torch.long)
        h = (ids[:, None] * 2654435761 + pix[None, :] * 40503) % 65521
        noise = (h.float() / 65521.0 - 0.5).view(-1, 1, self.size, self.size)
        return self.patterns[y] + noise, y


def child(n: int, size: int) -> dict:
    from influal.api import SelectionContext
    from influal.core import dist
    from influal.strategies import make_strategy
    from influal.tasks.classification import ClassificationTask
    from influal.tasks.classification.models import SmallCNN

    dist.init_from_env("cpu")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    pool = StreamedPool(n, size)
    reference = StreamedPool(200, size)
    torch.manual_seed(0)
    model = SmallCNN(10, 1).eval()
    labeled = np.arange(500, dtype=np.int64) * (n // 500)
    unlabeled = np.setdiff1d(np.arange(n, dtype=np.int64), labeled)
    ctx = SelectionContext(model=model, task=ClassificationTask(10), pool=pool, labeled_ids=labeled,
                           unlabeled_ids=unlabeled, reference=reference, generator=torch.Generator().manual_seed(1))
    t0 = time.perf_counter()
    selection = make_strategy("isal", scope="last", solver="cg").select(ctx, 100)
    total = time.perf_counter() - t0
    mine = {"rank": dist.rank(), "total_s": total, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "v_s": selection.info.get("v_s"), "s_test_s": selection.info.get("s_test_s"),
            "scoring_s": selection.info.get("scoring_s"), "first_ids": [int(i) for i in selection.ids[:5]]}
    if dist.active():
        import torch.distributed as tdist

        everyone = [None] * dist.world_size()
        tdist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    return {"ranks": everyone, "selected": [int(i) for i in selection.ids]}


def _train_worker(rank: int, world: int, init: str, mode: str, seed: int, out: str, epochs: int = 30) -> None:
    """Train the small CNN on 500 mnist5k digits (the demo recipe) on ``world`` ranks; ``mode`` "global" (influal's
    whole-batch BatchNorm statistics) or "per-rank" (each rank normalises its share alone); rank 0 writes the test
    accuracy and the flat weights."""
    import contextlib

    import torch.distributed as tdist

    import influal.training.sgd as sgd
    from influal.settings import TrainConfig
    from influal.tasks.classification import ClassificationTask
    from influal.tasks.classification.datasets import load_dataset
    from influal.tasks.classification.models import SmallCNN

    torch.set_num_threads(1)
    if world > 1:
        tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    if mode == "per-rank":
        sgd.global_batch_norm = lambda model: contextlib.nullcontext(model)
    splits = load_dataset("mnist5k")
    task = ClassificationTask(10)
    ids = np.random.default_rng(seed).permutation(len(splits.pool))[:500]
    torch.manual_seed(seed)
    model = SmallCNN(10, 1)
    recipe = TrainConfig.preset("demo")
    recipe = recipe.replace(epochs=epochs, milestones=tuple(m for m in recipe.milestones if m <= epochs))
    task.train(model, splits.pool, ids, recipe, torch.Generator().manual_seed(seed))
    if rank == 0:
        flat = torch.cat([p.detach().reshape(-1) for p in model.state_dict().values() if p.is_floating_point()])
        torch.save({"accuracy": task.evaluate(model, splits.test)["accuracy"], "flat": flat}, out)
    if world > 1:
        tdist.destroy_process_group()


def batchnorm_comparison(seeds: int = 3, epochs: tuple[int, ...] = (1, 3, 30)) -> list[dict]:
    """Test accuracy and weight distance to one process, for 2 ranks with whole-batch and per-rank BatchNorm
    statistics, after 1, 3 and 30 epochs of the demo recipe (8 steps per epoch on 500 labels)."""
    import tempfile

    import torch.multiprocessing as mp

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_epochs in epochs:
            for seed in range(seeds):
                one = Path(tmp) / f"one{seed}-{n_epochs}.pt"
                _train_worker(0, 1, "", "global", seed, str(one), n_epochs)
                base = torch.load(one)
                row = {"epochs": n_epochs, "seed": seed, "one_process": base["accuracy"]}
                for mode in ("global", "per-rank"):
                    path = Path(tmp) / f"{mode}{seed}-{n_epochs}.pt"
                    mp.spawn(_train_worker, args=(2, f"file://{tmp}/rdzv-{mode}-{seed}-{n_epochs}", mode, seed,
                                                  str(path), n_epochs), nprocs=2, join=True)
                    got = torch.load(path)
                    row[mode] = got["accuracy"]
                    row[f"{mode}_weight_rel_diff"] = float((got["flat"] - base["flat"]).norm() / base["flat"].norm())
                rows.append(row)
                print(row, flush=True)
    return rows


def run_config(n: int, size: int, ranks: int, threads: int) -> dict:
    env = {**os.environ, "BENCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "INFLUAL_QUIET": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    module = ["-m", "benchmarks.distributed", "--child", str(n), str(size)]
    cmd = [sys.executable, *module] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *module]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, check=False)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[0])
    result.update(n=n, size=size, world=ranks, threads=threads, wall_s=wall)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batchnorm", action="store_true", help="compare whole-batch and per-rank BatchNorm "
                        "statistics in 2-rank training against one process instead")
    args = parser.parse_args(argv)
    if args.batchnorm:
        rows = batchnorm_comparison()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "distributed_batchnorm.json").write_text(json.dumps(rows, indent=2))
        return 0
    if args.child:
        result = child(*args.child)
        from influal.core import dist

        if dist.is_main():
            print(json.dumps(result), flush=True)
        dist.shutdown()
        return 0
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for ranks, threads in ((1, 2), (1, 1), (2, 1)):
            r = run_config(n, args.image_size, ranks, threads)
            rows.append(r)
            slowest = max(x["total_s"] for x in r["ranks"])
            print(f"{n} items, {ranks} rank(s) x {threads} thread(s): selection {slowest:.2f}s "
                  f"({n / slowest:,.0f} items/s), peak {max(x['peak_mib'] for x in r['ranks']):.0f} MiB per rank",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distributed.json").write_text(json.dumps(rows, indent=2))
    print("| pool | ranks × threads | selection (slowest rank) | v | s_test | scoring | items/s | peak RSS per rank | "
          "same ids as 1 rank |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        slow = max(r["ranks"], key=lambda x: x["total_s"])
        base = next(x for x in rows if x["n"] == r["n"] and x["world"] == 1 and x["threads"] == 2)
        peaks = ", ".join(f"{x['peak_mib']:.0f}" for x in r["ranks"])
        print(f"| {r['n']:,} | {r['world']} × {r['threads']} | {slow['total_s']:.2f} s | {slow['v_s']:.2f} s | "
              f"{slow['s_test_s']:.2f} s | {slow['scoring_s']:.2f} s | {r['n'] / slow['total_s']:,.0f} | "
              f"{peaks} MiB | "
              f"{'yes' if r['selected'] == base['selected'] else 'NO'} |")
    sizes = sorted({r["n"] for r in rows})
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        for ranks, threads in ((1, 2), (1, 1), (2, 1)):
            ra = next(r for r in rows if r["n"] == a and r["world"] == ranks and r["threads"] == threads)
            rb = next(r for r in rows if r["n"] == b and r["world"] == ranks and r["threads"] == threads)
            ta, tb = (max(x["total_s"] for x in r["ranks"]) for r in (ra, rb))
            ma, mb = (max(x["peak_mib"] for x in r["ranks"]) for r in (ra, rb))
            print(f"{ranks} rank(s) x {threads}: time exponent {np.log(tb / ta) / np.log(b / a):.3f}; peak memory "
                  f"{ma:.0f} -> {mb:.0f} MiB (+{mb - ma:.0f} MiB for {b - a:,} more items; the scores and ids of the "
                  f"pool alone are {(b - a) * 8 * 3 / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
