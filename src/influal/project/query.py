"""One query round of a labeling project: train on the current labels, score the unlabeled images streamed from
disk, pick a batch, write the batch files and mark the batch pending.

A round is resumable: request.json is written first, the trained model is checkpointed (model.pt, loaded with
``weights_only=True``), and query.json is written last. A query killed at any point and run again with the same
settings continues the unfinished round and writes the same batch; run with other settings (or after labels
changed), the unfinished round starts again.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch

from ..api import REFERENCE_SET, DatasetSplits, SelectionContext, check_selection
from ..core import dist
from ..core.errors import ConfigError, DataError
from ..core.faults import fault_point
from ..core.io import atomic_write_bytes, atomic_write_json, read_json
from ..core.seeding import derive_seed
from ..core.torch_utils import resolve_device
from ..settings import Settings, TrainConfig
from ..strategies import make_strategy
from .catalog import file_hash
from .exports import BatchItem, write_batch
from .sheet import contact_sheet

Log = Callable[[str], None]


@dataclass
class QueryRequest:
    """What ``influal query`` was asked: the strategy and its settings, the batch size, the share of the batch
    reserved for the reference set (None: 0.2 while the project has no reference set, else 0), the model (a
    registered name; ``weights``: a local state dict to start from), the training recipe (None: the task's default;
    ``no_train``: no training, the weights as they are) and the task's settings."""

    strategy: str = "isal"
    budget: int = 100
    strategy_settings: dict[str, Any] = field(default_factory=dict)
    val_share: float | None = None
    model: str | None = None
    weights: str | None = None
    train: TrainConfig | None = None
    no_train: bool = False
    task_settings: Settings | None = None
    device: str = "auto"
    eval_batch_size: int = 256


DEFAULT_VAL_SHARE = 0.2


def load_weights(model: torch.nn.Module, path: Path, log: Log) -> None:
    """Load a local state dict (``weights_only=True``) into ``model``: tensors whose name and shape match are taken
    (a classifier head of another size is left as initialised, and said so); none matching is an error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike: one line for the user
        raise ConfigError(f"--weights {path} cannot be read as a state dict ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"--weights {path} holds a {type(state).__name__}, not a state dict")
    own = model.state_dict()
    taken = {k: v for k, v in state.items() if k in own and torch.is_tensor(v) and v.shape == own[k].shape}
    if not taken:
        raise ConfigError(f"--weights {path}: none of its {len(state)} tensors matches the model's names and shapes; "
                          "is it the weights of another model?")
    model.load_state_dict(taken, strict=False)
    skipped = sorted(set(own) - set(taken))
    log(f"loaded {len(taken)} of the model's {len(own)} tensors from {path}"
        + (f" ({len(skipped)} kept as initialised, e.g. {skipped[0]})" if skipped else ""))


class QueryRound:
    """The work of one round; built by :meth:`influal.project.Project.query`."""

    def __init__(self, project, request: QueryRequest, *, progress: bool = False, log: Log | None = None):
        self.project = project
        self.request = request
        self.progress = progress
        self.log = log or (lambda _m: None)
        self.plugin = project.plugin
        self.schema = project.schema

    # ------------------------------------------------------------------ checks (before anything is written)
    def prepare(self) -> None:
        p, req = self.project, self.request
        self.strategy = make_strategy(req.strategy, **req.strategy_settings)
        if self.plugin.task_class is not None:
            self.strategy.check_task(self.plugin.task_class)
        model_name = req.model or self.plugin.default_model
        self.plugin.models().resolve(model_name)
        task_settings = req.task_settings if req.task_settings is not None else self.plugin.settings_class()
        if req.no_train and req.train is not None:
            raise ConfigError("no_train uses the model as it is; give no training recipe with it")
        self.train = None if req.no_train else (req.train or TrainConfig.preset(self.plugin.default_train_preset))
        self.config = SimpleNamespace(task=p.task, model=model_name, task_settings=task_settings,
                                      eval_batch_size=req.eval_batch_size, train=self.train)
        self.round = p.next_round()
        labels = p.labels
        self.train_ids = np.asarray(labels.ids("train"), dtype=np.int64)
        self.val_ids = np.asarray(labels.ids("val"), dtype=np.int64)
        earlier = {i for i, entry in labels.pending.items() if entry["round"] < self.round}
        taken = set(labels.labels) | earlier
        self.candidates = np.asarray([r.id for r in p.records if r.id not in taken], dtype=np.int64)
        pending_val = any(entry["split"] == "val" for i, entry in labels.pending.items() if i in earlier)
        share = req.val_share
        if share is None:
            share = DEFAULT_VAL_SHARE if len(self.val_ids) == 0 and not pending_val else 0.0
        if not 0.0 <= share < 1.0:
            raise ConfigError(f"--val-share must lie in [0, 1), got {share}")
        self.val_share = share
        if not isinstance(req.budget, int) or isinstance(req.budget, bool) or req.budget < 1:
            raise ConfigError(f"--budget must be an integer >= 1, got {req.budget!r}")
        if req.budget > len(self.candidates):
            raise ConfigError(f"--budget {req.budget} exceeds the {len(self.candidates)} images that are neither "
                              f"labeled nor pending; lower it or add images (`influal add`)")
        self.n_val = int(round(share * req.budget)) if share else 0
        if share and self.n_val == 0:
            self.n_val = 1
        if self.n_val >= req.budget:
            raise ConfigError(f"--val-share {share} of a batch of {req.budget} leaves nothing for the strategy; "
                              "raise --budget or lower --val-share")
        if len(self.train_ids) == 0 and not self.strategy.cold_start:
            raise ConfigError(f"{p.path} has no training labels yet, so there is no model for {req.strategy!r} to "
                              "look at; start with `--strategy random` (or coreset, on the untrained network's "
                              "features), label that batch and import it, or give labels at init (--labels)")
        if REFERENCE_SET in self.strategy.requires and len(self.val_ids) == 0:
            raise ConfigError(f"{req.strategy!r} needs a labeled reference (validation) set, and {p.path} has none "
                              "yet: give one at init (--val FILE), import one (`influal import PROJECT FILE --split "
                              "val --allow-unrequested`), or label and import a first batch, which reserves "
                              f"{DEFAULT_VAL_SHARE:.0%} of its images for it (--val-share)")
        if req.weights is not None and not Path(req.weights).is_file():
            raise ConfigError(f"--weights {req.weights} does not exist; give a local file (nothing is downloaded)")
        missing = [r.path for r in p.records if not (p.root / r.path).is_file()]
        if missing:
            raise DataError(f"{len(missing)} recorded image file(s) are gone from {p.root} (the first: {missing[0]!r}); "
                            "restore them")
        self.trains = len(self.train_ids) > 0 and self.train is not None
        self.needs_model = self.strategy.uses_model or self.trains or req.weights is not None
        self.folder = p.store.query_dir(self.round)
        self.identity = {
            "round": self.round, "strategy": req.strategy, "strategy_settings": self.strategy.settings(),
            "budget": req.budget, "val_reserved": self.n_val, "model": model_name,
            "weights": None if req.weights is None else {"path": str(req.weights),
                                                         "hash": file_hash(Path(req.weights))},
            "train": None if self.train is None else self.train.to_dict(), "task_settings": task_settings.to_dict(),
            "seed": p.seed, "labels": labels.fingerprint(), "images": len(p.records),
            "pending_before": sorted(earlier),
        }

    # ------------------------------------------------------------------ the round
    def run(self) -> dict[str, Any]:
        p, req = self.project, self.request
        folder = self.folder
        timings: dict[str, float] = {}
        request_file = folder / "request.json"
        checkpoint = folder / "model.pt"
        main = dist.is_main()  # under torchrun rank 0 alone writes; every rank computes the round
        same = None
        if main and request_file.is_file():
            try:
                same = read_json(request_file) == self.identity
            except (OSError, ValueError):
                same = False
        same = dist.broadcast_object(same)  # rank 0's reading decides for every rank
        if same is False:
            self.log(f"query round {self.round} was interrupted with other settings or other labels; starting it "
                     "again")
            if main:
                checkpoint.unlink(missing_ok=True)
        elif same:
            self.log(f"resuming the unfinished query round {self.round}")
        if main:
            atomic_write_json(request_file, self.identity)
        dist.barrier()
        device = resolve_device(req.device)
        dataset = p.dataset()
        shape = self.schema.input_shape(p.images, p.classes)
        splits = DatasetSplits(p.name, pool=dataset, val=dataset, test=dataset, num_classes=shape[0],
                               in_channels=shape[1], image_size=shape[2])
        task = self.plugin.build_task(self.config, splits, device)
        model = None
        metrics: dict[str, float] = {}
        if self.needs_model:
            t0 = time.perf_counter()
            model = self._model(task, splits, dataset, device, checkpoint)
            timings["train_s"] = time.perf_counter() - t0
            self.strategy.check(task, model)
            if self.trains and len(self.val_ids):
                t0 = time.perf_counter()
                metrics = task.evaluate(model, dataset, self.val_ids)
                timings["eval_s"] = time.perf_counter() - t0
        candidates = self.candidates
        val_pick = np.zeros(0, dtype=np.int64)
        if self.n_val:
            gen = torch.Generator().manual_seed(derive_seed(p.seed, "val", self.round))
            perm = torch.randperm(len(candidates), generator=gen)[:self.n_val].numpy()
            val_pick = np.sort(candidates[perm])
            candidates = np.setdiff1d(candidates, val_pick)
        gen = torch.Generator().manual_seed(derive_seed(p.seed, "select", req.strategy, self.round))
        ctx = SelectionContext(model=model, task=task, pool=dataset, labeled_ids=self.train_ids,
                               unlabeled_ids=candidates, reference=dataset if len(self.val_ids) else None,
                               reference_ids=self.val_ids if len(self.val_ids) else None, generator=gen,
                               progress=self.progress)
        budget = req.budget - self.n_val
        t0 = time.perf_counter()
        selection = self.strategy.select(ctx, budget)
        timings["select_s"] = time.perf_counter() - t0
        check_selection(selection, ctx, budget, req.strategy)
        fault_point("after a query's selection")
        chosen = [int(i) for i in selection.ids]
        score_of = {}
        if selection.scores is not None:
            score_of = {int(i): float(s) for i, s in zip(candidates, selection.scores)}
        batch_ids = chosen + [int(i) for i in val_pick]
        predictions: list = [None] * len(batch_ids)
        if model is not None:
            t0 = time.perf_counter()
            predictions = self.schema.predict(task, model, dataset, batch_ids, p.classes)
            timings["predict_s"] = time.perf_counter() - t0
        items = [BatchItem(p.records[i], rank + 1, score_of.get(i), "val" if rank >= len(chosen) else "train", pred)
                 for rank, (i, pred) in enumerate(zip(batch_ids, predictions))]
        t0 = time.perf_counter()
        files = ["batch.csv", "tasks.json", "labeling-config.xml", "contact-sheet.png"]
        if main:
            files = write_batch(folder, items, self.schema, p.classes, self.round, p.image_url, p.document_prefix)
            contact_sheet(p.root, items, self.schema, folder / "contact-sheet.png")
            files.append("contact-sheet.png")
            p.mark_pending({i.record.id: i.split for i in items}, self.round)
        timings["write_s"] = time.perf_counter() - t0
        scored = np.asarray([s for s in score_of.values() if np.isfinite(s)], dtype=np.float64)
        in_batch = [score_of[i] for i in chosen if np.isfinite(score_of.get(i, np.nan))]
        scores = None
        if len(scored):
            scores = {"min": float(scored.min()), "mean": float(scored.mean()), "max": float(scored.max()),
                      "batch_max": max(in_batch) if in_batch else None}
        record = {
            "round": self.round, "strategy": req.strategy, "strategy_settings": self.strategy.settings(),
            "budget": req.budget, "selected": chosen, "val_reserved": val_pick.tolist(),
            "train_labels": len(self.train_ids), "val_labels": len(self.val_ids),
            "cost": float(sum(self.schema.cost(p.labels.labels[i]["answer"]) for i in self.train_ids.tolist())),
            "metrics": metrics, "model": self.config.model, "trained": bool(self.trains),
            "candidates": len(self.candidates), "scores": scores,
            "selection": selection.summary(), "files": files,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        record["world_size"] = dist.world_size()
        if main:
            atomic_write_json(folder / "query.json", json.loads(json.dumps(record, default=float)))
        dist.barrier()
        return record

    def _model(self, task, splits, dataset, device, checkpoint: Path) -> torch.nn.Module:
        req, p = self.request, self.project
        seed = derive_seed(p.seed, "train", self.round)
        torch.manual_seed(seed)
        model = self.plugin.model_factory(self.config, splits)().to(device)
        if dist.broadcast_object(checkpoint.is_file()) and self.strategy.state == "none":
            state = torch.load(checkpoint, map_location=device, weights_only=True)
            model.load_state_dict(state)
            self.log(f"loaded the model of round {self.round} from {checkpoint}")
            return task.ready(model)
        if req.weights is not None:
            load_weights(model, Path(req.weights), self.log)
        if not self.trains:
            return task.ready(model)
        prepared = self.strategy.prepare_training(model, task, dataset, self.train_ids, self.train)
        trained, extra = model, {}
        if prepared is not None:
            trained, extra["loss_fn"] = prepared
        self.log(f"training {self.config.model} on {len(self.train_ids)} labeled images")
        task.train(trained, dataset, self.train_ids, self.train, torch.Generator().manual_seed(seed),
                   progress=self.progress, **extra)
        if dist.is_main():
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            atomic_write_bytes(checkpoint, buf.getvalue())
        fault_point("after a query's training")
        return model
