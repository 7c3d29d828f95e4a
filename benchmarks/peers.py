"""Influence libraries side by side on ISAL's job (issue 15, item 1): ``python -m benchmarks.peers``.

The job: one summed reference gradient ``v = Σ_r ∇l(r)`` over the reference set, one inverse-HVP
``s = (H + λI)⁻¹ v`` with H the Hessian of the mean labeled loss (λ = 0.01), and every pool item scored as
``score(z) = -∇l(z, ŷ_z)·s`` with ŷ_z the model's argmax pseudo-label (lower = better to label). Every contender
returns its scores in that convention (a library whose sign is the opposite is negated, as said per contender).

For the peers the pseudo-labels are the "targets" of the train side (so that the library's per-example gradient
is ∇l(z, ŷ_z)), the reference set is the "query"/"test" side, and the Hessian / curvature is fitted on the labeled
set with its true labels. Each (contender, repetition) runs in a fresh process (``--child``), the repetitions
interleaved (contender A, B, C, … then again), so that a slow spell of the machine hits all alike; the parent
writes ``benchmarks/results/peers.json`` and prints a markdown table. Plain inference (a no-grad forward over the
pool, batch 256) is timed the same way, as a contender of its own.

The peers are installed by ``make bench-peers`` into ``.venv-peers`` (``pip install -e '.[peers]' -c
benchmarks/peers-constraints.txt``); a peer that does not import there is recorded with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("TQDM_DISABLE", "1")  # the peers' progress bars (dattri's) would flood the log
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent.parent / "results" / "peers-cache"  # git-ignored (/results/)
DAMPING = 0.01
DATTRI_CG_ITER = 50
BATCH = 256


# --------------------------------------------------------------------------------------------------- statistics

def rankdata(a) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span (scipy's ``rankdata(method="average")``)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(a, b) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); NaN if either side is constant or not finite."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman: {a.shape} against {b.shape}")
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


# ---------------------------------------------------------------------------------------------------- the problem

@dataclass
class Problem:
    """One trained model and its data: reference, labeled and pool ids into one data set, plus the same items as
    plain tensors for the peers (normalised as influal's batches are)."""

    model: nn.Module
    task: Any  # influal ClassificationTask
    data: Any  # TensorImageDataset
    ref_ids: np.ndarray
    labeled_ids: np.ndarray
    pool_ids: np.ndarray
    x_ref: torch.Tensor = field(init=False)
    y_ref: torch.Tensor = field(init=False)
    x_lab: torch.Tensor = field(init=False)
    y_lab: torch.Tensor = field(init=False)
    x_pool: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.model.eval()

        def tensors(ids):
            xs, ys = [], []
            for _, x, y in self.task.batches(self.data, ids, 1024):
                xs.append(x)
                ys.append(y)
            return torch.cat(xs), torch.cat(ys)

        self.x_ref, self.y_ref = tensors(self.ref_ids)
        self.x_lab, self.y_lab = tensors(self.labeled_ids)
        self.x_pool, _ = tensors(self.pool_ids)

    def last_module(self) -> str:
        """The name of the classifier's final nn.Linear (influal's scope ``last``)."""
        names = [n for n, m in self.model.named_modules() if isinstance(m, nn.Linear)]
        return names[-1]

    def scope_modules(self, scope: str) -> list[str]:
        """Module names for the libraries that track modules: ``last`` the final Linear; ``weights`` every Linear
        and Conv2d (their biases come along there, unlike influal's ``weights``, which is the >1-D tensors)."""
        if scope == "last":
            return [self.last_module()]
        return [n for n, m in self.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    def scope_param_names(self, scope: str) -> list[str]:
        """Parameter names of influal's scopes: ``last`` the final Linear's weight and bias; ``weights`` every
        trainable tensor with more than one dimension."""
        if scope == "last":
            return [f"{self.last_module()}.weight", f"{self.last_module()}.bias"]
        return [n for n, q in self.model.named_parameters() if q.requires_grad and q.ndim > 1]

    def scope_params(self, scope: str) -> int:
        mods = dict(self.model.named_modules())
        return sum(p.numel() for n in self.scope_modules(scope) for p in mods[n].parameters())

    def peer_model(self) -> nn.Module:
        """A copy for the peers with in-place ReLUs made out-of-place (the same function; module hooks and
        torch.func need the layer outputs intact)."""
        model = copy.deepcopy(self.model).eval()
        for m in model.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
        return model

    def pseudo_labels(self, model: nn.Module | None = None) -> torch.Tensor:
        model = self.model if model is None else model
        with torch.no_grad():
            return torch.cat([model(x).argmax(1) for x in self.x_pool.split(BATCH)])


def _mnist_images(n: int):
    """n digits of the offline MNIST subset, validation split first (the reference set), then pool and test."""
    from influal.bench.engine import _mnist_pool

    return _mnist_pool(n, order=("val", "pool", "test"))


def build_problem(model_name: str, pool: int, labeled: int = 1000, reference: int = 500, seed: int = 0) -> Problem:
    """The task data (reference 0..R-1 = mnist5k's validation split, labeled next, pool after) and the model,
    trained once on the labeled set and cached under results/peers-cache (every child loads the same weights)."""
    from influal.settings import TrainConfig
    from influal.tasks.classification import ClassificationTask, build_model

    data = _mnist_images(reference + labeled + pool)
    ref_ids = np.arange(reference)
    labeled_ids = np.arange(reference, reference + labeled)
    pool_ids = np.arange(reference + labeled, reference + labeled + pool)
    task = ClassificationTask(10, torch.device("cpu"))
    torch.manual_seed(seed)
    model = build_model(model_name, 10, 1, 28)
    path = CACHE / f"{model_name}-L{labeled}-R{reference}-seed{seed}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        preset = "demo" if model_name == "cnn" else "fast"
        t0 = time.perf_counter()
        task.train(model, data, labeled_ids, TrainConfig.preset(preset), torch.Generator().manual_seed(seed))
        print(f"trained {model_name} on {labeled} labeled digits ({preset} preset) in "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return Problem(model.eval(), task, data, ref_ids, labeled_ids, pool_ids)


# --------------------------------------------------------------------------------------------------- contenders

class Phases:
    """Wall time per named phase of one contender's run."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


class Unsupported(Exception):
    """The contender cannot do this (scope, size): recorded with the reason, not an error."""


class Failed(Exception):
    """The contender tried and its method broke down (e.g. CG on a non-convex scope): recorded with the reason."""


@dataclass
class Contender:
    name: str
    run: Callable[[Problem, str, Phases], np.ndarray]  # (problem, scope, phases) -> scores, lower = better
    needs: str | None = None  # the module it imports (None: influal itself)
    note: str = ""
    scopes: tuple[str, ...] = ("last", "weights")  # where it is run (elsewhere: recorded as unsupported)


def available(contender: Contender) -> str | None:
    """None if the contender can run in this environment, else why not."""
    if contender.needs is None:
        return None
    if contender.needs in UNINSTALLABLE:
        return UNINSTALLABLE[contender.needs]
    try:
        __import__(contender.needs)
    except Exception as exc:  # noqa: BLE001
        return f"not importable here: {type(exc).__name__}: {exc}"
    return None


#: peers that cannot be installed with this torch stack, and why (their import error is added at run time)
UNINSTALLABLE = {
    "pydvl": "pyDVL: 0.10.0 requires numpy<2, while the torch stack pins numpy 2.4.6; pip then picks 0.9.2, "
             "which fails to import under numpy 2 (np.float_ in pydvl/utils/score.py)",
}


def _influal(solver: str, gs_method: str = "auto") -> Callable:
    def run(p: Problem, scope: str, phases: Phases) -> np.ndarray:
        from influal.core.errors import ConfigError, SolverError
        from influal.influence.engine import InfluenceEngine
        from influal.settings import InfluenceConfig

        cfg = InfluenceConfig(scope=scope, solver=solver, damping=DAMPING, gs_method=gs_method)
        with phases("setup"):
            engine = InfluenceEngine(p.model, p.task, cfg)
        try:
            with phases("run"):
                result = engine.run(p.data, p.labeled_ids, p.pool_ids, p.data, p.ref_ids,
                                    torch.Generator().manual_seed(0))
        except ConfigError as exc:  # e.g. the exact solve on a scope over exact_max_params
            raise Unsupported(f"influal refuses: {exc}") from None
        except SolverError as exc:  # e.g. CG meeting negative curvature on the weight tensors
            raise Failed(str(exc)) from None
        del phases.seconds["run"]
        phases.seconds.update({"v": result.timings["v_s"], "solve": result.timings["s_test_s"],
                               "scoring": result.timings["scoring_s"]})
        phases.info = {"solver": result.solve.solver, "effective_damping": result.solve.effective_damping,
                       "gs_method": result.method, **{k: v for k, v in result.summary().items()
                                                      if k in ("iterations", "converged", "final_residual")}}
        return np.asarray(result.scores, dtype=np.float64)
    return run


def _kronfluence(strategy: str) -> Callable:
    def run(p: Problem, scope: str, phases: Phases) -> np.ndarray:
        from kronfluence.analyzer import Analyzer, prepare_model
        from kronfluence.arguments import FactorArguments, ScoreArguments
        from kronfluence.task import Task
        from torch.utils.data import TensorDataset

        modules = p.scope_modules(scope)

        class _Task(Task):
            def compute_train_loss(self, batch, model, sample=False):
                x, y = batch
                logits = model(x)
                if sample:  # the true Fisher: labels drawn from the model (kronfluence's own recipe)
                    with torch.no_grad():
                        y = torch.multinomial(torch.softmax(logits.detach(), -1), 1).flatten()
                return F.cross_entropy(logits, y, reduction="sum")

            def compute_measurement(self, batch, model):
                x, y = batch
                return F.cross_entropy(model(x), y, reduction="sum")

            def get_influence_tracked_modules(self):
                return modules

        with phases("pseudo_labels"):
            y_pool = p.pseudo_labels()
        out = tempfile.mkdtemp(prefix="kron-")
        with phases("setup"):
            task = _Task()
            model = prepare_model(p.peer_model(), task)
            analyzer = Analyzer(analysis_name="peers", model=model, task=task, cpu=True, disable_tqdm=True,
                                output_dir=out, log_level=40)
        with phases("factors"):
            analyzer.fit_all_factors(factors_name=strategy, dataset=TensorDataset(p.x_lab, p.y_lab),
                                     per_device_batch_size=BATCH, factor_args=FactorArguments(strategy=strategy),
                                     overwrite_output_dir=True)
        with phases("scores"):
            analyzer.compute_pairwise_scores(
                scores_name="s", factors_name=strategy, query_dataset=TensorDataset(p.x_ref, p.y_ref),
                train_dataset=TensorDataset(p.x_pool, y_pool), per_device_query_batch_size=len(p.x_ref),
                per_device_train_batch_size=BATCH, overwrite_output_dir=True,
                score_args=ScoreArguments(aggregate_query_gradients=True, damping_factor=DAMPING))
            scores = analyzer.load_pairwise_scores("s")["all_modules"]
        # kronfluence: v·(G + λ)⁻¹ g_z, positive = helpful; ISAL's convention is its negative
        return -scores.detach().reshape(-1).double().cpu().numpy()
    return run


def _dattri(kind: str) -> Callable:
    def run(p: Problem, scope: str, phases: Phases) -> np.ndarray:
        from dattri.algorithm.influence_function import IFAttributorCG, IFAttributorExplicit, IFAttributorLiSSA
        from dattri.task import AttributionTask
        from torch.utils.data import DataLoader, TensorDataset

        size = sum(q.numel() for n, q in p.model.named_parameters() if n in set(p.scope_param_names(scope)))
        if kind == "explicit" and size > 20_000:
            raise Unsupported(f"explicit Hessian not attempted: {size:,} parameters (> 20,000, influal's "
                              "exact_max_params)")
        with phases("pseudo_labels"):
            y_pool = p.pseudo_labels()
        with phases("setup"):
            model = p.peer_model()

            def loss_func(params, data):  # mean loss: per example (a batch of 1) and the labeled set's Hessian
                x, y = data  # (dattri's LiSSA sampler hands the labels over as floats)
                return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y.long())

            def target_func(params, data):  # the query: the whole reference set as one item, summed loss = v
                x, y = data
                if x.ndim == 5:
                    x, y = x.flatten(0, 1), y.flatten()
                return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y, reduction="sum")

            task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict(),
                                   target_func=target_func)
            layers = p.scope_param_names(scope)  # dattri's layer_name: parameter names
            if kind == "cg":
                # dattri's CG has no stopping test: it runs max_iter steps, and turns NaN (0/0) once the
                # residual is exactly 0, so the step count stays well under the scope's size
                attributor = IFAttributorCG(task=task, layer_name=layers, device="cpu", regularization=DAMPING,
                                            max_iter=min(DATTRI_CG_ITER, size // 4))
            elif kind == "lissa":  # fixed point (H + damping·scaling)⁻¹ v: damping·scaling = λ
                scaling = 50.0
                attributor = IFAttributorLiSSA(task=task, layer_name=layers, device="cpu", damping=DAMPING / scaling,
                                               scaling=scaling, recursion_depth=1000, batch_size=1, num_repeat=1)
            else:
                attributor = IFAttributorExplicit(task=task, layer_name=layers, device="cpu",
                                                  regularization=DAMPING)
        with phases("cache"):
            attributor.cache(DataLoader(TensorDataset(p.x_lab, p.y_lab), batch_size=len(p.x_lab)))
        with phases("attribute"):
            # the pool in batches of 1000: dattri redoes the inverse-HVP of the query for every train batch
            train = DataLoader(TensorDataset(p.x_pool, y_pool), batch_size=min(len(p.x_pool), 1000))
            query = DataLoader(TensorDataset(p.x_ref.unsqueeze(0), p.y_ref.unsqueeze(0)), batch_size=1)
            scores = attributor.attribute(train, query)  # (n_pool, 1): g_z·(H + λ)⁻¹ v
        return -scores.detach().reshape(-1).double().cpu().numpy()
    return run


def _captum(p: Problem, scope: str, phases: Phases) -> np.ndarray:
    from captum.influence import TracInCPFast
    from torch.utils.data import DataLoader, TensorDataset

    if scope != "last":
        raise Unsupported("TracInCPFast works on the final fully-connected layer only")
    with phases("pseudo_labels"):
        y_pool = p.pseudo_labels()
    with phases("setup"):
        model = p.peer_model()
        ckpt = Path(tempfile.mkdtemp(prefix="captum-")) / "model.pt"
        torch.save(model.state_dict(), ckpt)  # the one "checkpoint": the trained model, learning rate 1

        def load(m, path):
            m.load_state_dict(torch.load(path, weights_only=True))
            return 1.0

        tracin = TracInCPFast(model, final_fc_layer=p.last_module(),
                              train_dataset=DataLoader(TensorDataset(p.x_pool, y_pool), batch_size=BATCH),
                              checkpoints=[str(ckpt)], checkpoints_load_func=load,
                              loss_fn=nn.CrossEntropyLoss(reduction="sum"), batch_size=BATCH)
    with phases("influence"):
        matrix = tracin.influence((p.x_ref, p.y_ref))  # (n_ref, n_pool): g_r·g_z (weight of the layer only)
        scores = matrix.sum(0)
    return -scores.detach().double().cpu().numpy()


def _pydvl(kind: str) -> Callable:
    def run(p: Problem, scope: str, phases: Phases) -> np.ndarray:  # pragma: no cover - not importable here
        raise Unsupported(UNINSTALLABLE["pydvl"])
    return run


def _inference(p: Problem, scope: str, phases: Phases, layout: bool = False) -> np.ndarray:
    from influal.influence.layout import channels_last

    with phases("forward"):
        with torch.no_grad(), channels_last(p.model, layout):
            for _, x, _ in p.task.batches(p.data, p.pool_ids, BATCH):
                p.model(x)
    return np.zeros(len(p.pool_ids))


def _inference_cl(p: Problem, scope: str, phases: Phases) -> np.ndarray:
    return _inference(p, scope, phases, layout=True)


CONTENDERS: dict[str, Contender] = {c.name: c for c in [
    Contender("inference", _inference, note="plain no-grad forward over the pool, batch 256, as built"),
    Contender("influal", _influal("auto"), note="the default: solver auto (CG where the task says the scope is "
                                                  "convex, i.e. last; else the paper's LiSSA, λ = 100)"),
    Contender("influal-cg", _influal("cg")),
    Contender("influal-exact", _influal("exact")),
    Contender("influal-lissa", _influal("lissa"), note="the paper's constants: λ = d·scale = 100"),
    Contender("influal-lissa-auto", _influal("lissa-auto")),
    Contender("inference-cl", _inference_cl, note="plain inference in influal's layout (channels-last weights on "
                                                  "the CPU, as influal's scoring pass runs)"),
    Contender("influal-identity", _influal("identity")),
    Contender("influal-fd", _influal("auto", gs_method="fd"), scopes=("weights",),
              note="the default solve, scoring by central differences along s (two forward passes; on the last "
                   "layer the closed form is exact and as fast)"),
    Contender("influal-identity-fd", _influal("identity", gs_method="fd"), scopes=("weights",),
              note="s = v, scoring by central differences: the scoring pass of influal-fd without its solve"),
    Contender("influal-lissa-auto-fd", _influal("lissa-auto", gs_method="fd"), scopes=("weights",),
              note="lissa-auto (λ = 0.01, raised where the curvature is negative), scoring by central differences"),
    Contender("influal-ekfac", _influal("ekfac"), note="EK-FAC curvature (the one kronfluence-ekfac uses), closed-form "
              "solve, exact layerwise scoring"),
    Contender("influal-ekfac-fd", _influal("ekfac", gs_method="fd"), scopes=("weights",),
              note="EK-FAC solve, scoring by central differences along s"),
    Contender("loop", _influal("auto", gs_method="loop"),
              note="influal's default v and solve, scoring by the batch-size-1 autograd loop"),
    Contender("kronfluence-identity", _kronfluence("identity"), "kronfluence",
              "aggregated query gradients; tracked: the scope's Linear/Conv2d modules (biases included)"),
    Contender("kronfluence-ekfac", _kronfluence("ekfac"), "kronfluence",
              "EK-FAC of the true Fisher on the labeled set, damping 0.01, aggregated query gradients"),
    Contender("dattri-cg", _dattri("cg"), "dattri", "50 CG steps (no stopping test in dattri); the query = the whole reference set as one "
                                                     "item (summed loss); pool in batches of 1000"),
    Contender("dattri-lissa", _dattri("lissa"), "dattri", "recursion depth 1000, batch 1, scaling 50, "
                                                           "damping 0.01/50"),
    Contender("dattri-explicit", _dattri("explicit"), "dattri"),
    Contender("pydvl-cg", _pydvl("cg"), "pydvl"),
    Contender("pydvl-direct", _pydvl("direct"), "pydvl"),
    Contender("captum-tracincpfast", _captum, "captum",
              "one checkpoint (the trained model, lr 1): g_r·g_z on the final layer's weight, no Hessian"),
]}


# ---------------------------------------------------------------------------------------------------- one child

def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2 ** 20


def run_one(contender: Contender, problem: Problem, scope: str) -> dict[str, Any]:
    """Run one contender in this process: its scores, phase times and total (pseudo-labels included)."""
    if scope not in contender.scopes:
        raise Unsupported(f"run on the scope{'s' * (len(contender.scopes) > 1)} {', '.join(contender.scopes)} only")
    phases = Phases()
    phases.info = {}
    t0 = time.perf_counter()
    scores = contender.run(problem, scope, phases)
    total = time.perf_counter() - t0
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.shape != (len(problem.pool_ids),):
        raise RuntimeError(f"{contender.name}: {scores.shape[0]} scores for a pool of {len(problem.pool_ids)}")
    return {"scores": scores, "total_s": total, "phases_s": dict(phases.seconds), "info": phases.info}


def _memory_guard(limit_mb: float) -> None:
    """End this child (exit status 3, one JSON line) if its resident memory passes ``limit_mb``: a contender
    that runs away must not push the machine (and whatever else runs on it) into the OOM killer."""
    import threading

    def watch():
        while True:
            rss = _rss_mb()
            if rss > limit_mb:
                print(json.dumps({"status": "memory", "reason": f"resident memory passed the {limit_mb:.0f} MB "
                                  f"limit of one child ({rss:.0f} MB); stopped"}), flush=True)
                os._exit(3)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def child(spec: dict[str, Any]) -> dict[str, Any]:
    from influal.core.runtime import tune_allocator

    _memory_guard(spec.get("memory_limit_mb", 8000))

    tune_allocator()  # as the influal command does; for every contender alike
    torch.set_num_threads(spec["threads"])
    contender = CONTENDERS[spec["contender"]]
    why = available(contender)
    if why:
        return {"status": "unavailable", "reason": why}
    problem = build_problem(spec["model"], spec["pool"], spec["labeled"], spec["reference"])
    setup_mb = _rss_mb()
    try:
        out = run_one(contender, problem, spec["scope"])
    except Unsupported as exc:
        return {"status": "unsupported", "reason": str(exc)}
    except Failed as exc:
        return {"status": "failed", "reason": str(exc)}
    np.save(spec["scores_path"], out.pop("scores"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"status": "ok", **out, "setup_rss_mb": setup_mb, "peak_rss_mb": peak_mb,
            "scope_params": problem.scope_params(spec["scope"]) if spec["scope"] != "auto" else None}


# ---------------------------------------------------------------------------------------------------- the parent

def _spawn(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.peers", "--child", json.dumps(spec)]
    root = Path(__file__).resolve().parent.parent
    try:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 3 and lines:
        return json.loads(lines[-1])
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"status": "error", "reason": " | ".join(tail)[-900:]}
    return json.loads(lines[-1])


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in ("torch", "numpy", "influal", "kronfluence", "dattri", "pydvl", "captum"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_grid(models, pools, scopes, contenders, repeats, labeled, reference, threads, timeout, log=print,
             memory_limit_mb: float = 8000, save: Callable[[list], None] | None = None):
    """Every (model, pool, scope, contender) ``repeats`` times in fresh processes, interleaved; ``save(rows)`` after
    each (model, pool), so a long grid that is stopped keeps what it finished."""
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    rows: list[dict[str, Any]] = []
    for model in models:
        build_problem(model, min(pools), labeled, reference)  # train and cache once, before any timing
        for pool in pools:
            # the exact last-layer solve is the reference of every correlation: always run
            cells = [("last", "influal-exact")] if "influal-exact" not in contenders or "last" not in scopes else []
            cells += [(scope, name) for scope in scopes for name in contenders]
            runs: dict[tuple[str, str], list[dict]] = {c: [] for c in cells}
            for rep in range(repeats):
                for scope, name in cells:
                    if runs[(scope, name)] and runs[(scope, name)][0]["status"] != "ok":
                        continue  # unavailable / unsupported / failed: once is enough
                    spec = {"contender": name, "model": model, "pool": pool, "scope": scope, "labeled": labeled,
                            "reference": reference, "threads": threads, "memory_limit_mb": memory_limit_mb,
                            "scores_path": str(work / f"{model}-{pool}-{scope}-{name}-{rep}.npy")}
                    load = _load_avg()
                    res = _spawn(spec, timeout)
                    res["load_avg_before"] = load
                    runs[(scope, name)].append(res)
                    log(f"{model} pool {pool} {scope:7s} {name:22s} rep {rep}: {res['status']} "
                        + (f"{res['total_s']:.2f} s, peak {res['peak_rss_mb']:.0f} MB" if res["status"] == "ok"
                           else res.get("reason", "")[:200]))
            exact = np.load(work / f"{model}-{pool}-last-influal-exact-0.npy")
            for scope, name in cells:
                done = runs[(scope, name)]
                row = {"model": model, "pool": pool, "scope": scope, "contender": name,
                       "note": CONTENDERS[name].note}
                ok = [r for r in done if r["status"] == "ok"]
                if not ok:
                    row.update({"status": done[0]["status"], "reason": done[0].get("reason", "")})
                    rows.append(row)
                    continue
                scores = np.load(work / f"{model}-{pool}-{scope}-{name}-0.npy")
                reps_agree = [spearman(scores, np.load(work / f"{model}-{pool}-{scope}-{name}-{k}.npy"))
                              for k in range(1, len(ok))]
                phase_names = list(ok[0]["phases_s"])
                row.update({
                    "status": "ok", "repeats": len(ok), "total_s": _stats([r["total_s"] for r in ok]),
                    "phases_s": {ph: _stats([r["phases_s"][ph] for r in ok]) for ph in phase_names},
                    "peak_rss_mb": _stats([r["peak_rss_mb"] for r in ok]),
                    "setup_rss_mb": _stats([r["setup_rss_mb"] for r in ok]),
                    "scope_params": ok[0].get("scope_params"), "info": ok[0].get("info", {}),
                    "spearman_vs_exact_last": None if name.startswith("inference") else spearman(scores, exact),
                    "spearman_between_repeats_min": min(reps_agree) if reps_agree else None,
                    "finite": bool(np.isfinite(scores).all()),
                    "load_avg_before": [r["load_avg_before"] for r in done],
                })
                rows.append(row)
            _ratios(rows, model, pool)
            if save is not None:
                save(rows)
    return rows


def _ratios(rows, model, pool) -> None:
    def median_of(scope, name):
        for r in rows:
            if (r["model"], r["pool"], r["scope"], r["contender"]) == (model, pool, scope, name) and \
                    r["status"] == "ok":
                return r["total_s"]["median"]
        return None

    for r in rows:
        if (r["model"], r["pool"]) != (model, pool) or r["status"] != "ok":
            continue
        base = median_of(r["scope"], "influal")
        for key, name in (("x_inference", "inference"), ("x_inference_cl", "inference-cl")):
            inf = next((x["total_s"]["median"] for x in rows if (x["model"], x["pool"], x["contender"]) ==
                        (model, pool, name) and x["status"] == "ok"), None)
            r[key] = r["total_s"]["median"] / inf if inf else None
        r["x_influal"] = r["total_s"]["median"] / base if base else None


def _fmt(x, digits=2):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def table(rows) -> str:
    head = ("| model | pool | scope | contender | phases, median s | total s (min / median / max) | × influal | "
            "× inference | × inference (CL) | peak RSS MB | Spearman vs exact last |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    seen_inference = set()
    for r in rows:
        key = (r["model"], r["pool"], r["contender"])
        if r["contender"].startswith("inference"):
            if key in seen_inference:
                continue
            seen_inference.add(key)
        scope = "–" if r["contender"].startswith("inference") else r["scope"]
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['pool']} | {scope} | {r['contender']} | {r['status']}: "
                         f"{r.get('reason', '')} | | | | | | |")
            continue
        phases = ", ".join(f"{k} {_fmt(v['median'])}" for k, v in r["phases_s"].items())
        t = r["total_s"]
        lines.append(f"| {r['model']} | {r['pool']} | {scope} | {r['contender']} | {phases} | "
                     f"{_fmt(t['min'])} / {_fmt(t['median'])} / {_fmt(t['max'])} | {_fmt(r.get('x_influal'))} | "
                     f"{_fmt(r.get('x_inference'), 1)} | {_fmt(r.get('x_inference_cl'), 1)} | "
                     f"{_fmt(r['peak_rss_mb']['median'], 0)} | "
                     f"{_fmt(r['spearman_vs_exact_last'], 3)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="cnn", help="comma-separated: cnn, resnet18-maxpool")
    parser.add_argument("--pools", default="4000", help="comma-separated pool sizes (issue 15: 4000,32000)")
    parser.add_argument("--scopes", default="last", help="comma-separated: last, weights")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated; " +
                        ", ".join(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--labeled", type=int, default=1000)
    parser.add_argument("--reference", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every child")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to one child")
    parser.add_argument("--memory-limit-mb", type=float, default=8000, help="a child past this RSS is stopped")
    parser.add_argument("--out", default=str(RESULTS / "peers.json"))
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    names = [c for c in args.contenders.split(",") if c]
    unknown = sorted(set(names) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    command = "python -m benchmarks.peers" + (" " + " ".join(argv if argv is not None else sys.argv[1:])
                                              if (argv if argv is not None else sys.argv[1:]) else "")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()

    def save(rows, complete=False):
        result = {"benchmark": "peers", "command": command, "started": started, "complete": complete,
                  "wall_s": time.perf_counter() - t0, "damping": DAMPING, "labeled": args.labeled,
                  "reference": args.reference, "repeats": args.repeats, "threads": args.threads,
                  "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                              "processor": platform.processor() or platform.machine()},
                  "versions": _versions(), "rows": rows}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.out)

    rows = run_grid(args.models.split(","), [int(x) for x in args.pools.split(",")], args.scopes.split(","),
                    names, args.repeats, args.labeled, args.reference, args.threads, args.timeout,
                    log=lambda m: print(m, file=sys.stderr, flush=True), memory_limit_mb=args.memory_limit_mb,
                    save=save)
    save(rows, complete=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
