"""The labeling workflow's Python API: ``Project.init``, ``project.add``, ``project.query``,
``project.import_labels``, ``project.status`` — the same verbs as ``influal init / add / query / import / status``.

Everything a command can check is checked before it writes anything: ``init`` builds the project in a temporary
folder and renames it into place; ``import_labels`` validates every answer and then replaces labels.json whole.
Commands that change a project hold its ``.influal.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from ..api import ImageCollection, LabelSchema
from ..core import dist
from ..core.errors import ConfigError, DataError, StateError
from ..core.io import clean_temporary, fsync_dir
from ..core.lock import FolderLock
from ..tasks import get_task
from .catalog import file_hash, scan
from .exports import LOCAL_FILES
from .formats import Catalog, class_names_in, read_entries
from .merge import ImportOptions, apply_plan, plan_import
from .query import QueryRequest, QueryRound
from .store import FORMAT, VERSION, Labels, ProjectStore

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def check_classes(names: Sequence[str], *, minimum: int) -> list[str]:
    names = [str(c).strip() for c in names]
    if any(not c for c in names):
        raise ConfigError("a class name is empty; give names like --classes cat,dog")
    dup = sorted(c for c, n in Counter(names).items() if n > 1)
    if dup:
        raise ConfigError(f"class {dup[0]!r} is listed twice; give each class once")
    if len(names) < minimum:
        raise ConfigError(f"this task needs at least {minimum} class(es), got {len(names)}"
                          + (f" ({', '.join(names)})" if names else "") + "; give --classes or --classes-file")
    return names


def _schema(task: str) -> tuple[Any, LabelSchema]:
    plugin = get_task(task)
    schema = plugin.labeling()
    if schema is None:
        raise ConfigError(f"task {task!r} offers no labeling workflow (its plug-in has no LabelSchema)")
    return plugin, schema


def _prefix(images: Path, document_root: str | Path | None) -> str:
    """The image folder's path under Label Studio's document root (default: its parent, since Label Studio serves
    files from a storage folder strictly below the root)."""
    if document_root is None:
        return images.resolve().name
    try:
        return images.resolve().relative_to(Path(document_root).resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"the image folder {images} is not under --document-root {document_root}; Label Studio "
                          "serves local files from under its document root only") from None


class Project:
    """A labeling project folder (see :mod:`influal.project.store` for its files)."""

    def __init__(self, path: str | Path):
        self.store = ProjectStore(path)
        self.path = self.store.path
        meta = self.store.read_meta()
        self.meta = meta
        self.task = meta["task"]
        self.plugin, self.schema = _schema(self.task)
        self.root = Path(meta["images_root"])
        self.classes: list[str] = list(meta["classes"])
        self.seed = int(meta.get("seed", 0))
        self.image_url = meta.get("label_studio", {}).get("image_url", LOCAL_FILES)
        self.document_prefix = meta.get("label_studio", {}).get("document_prefix", ".")
        self.reload()

    def reload(self) -> None:
        """Read the image catalog and the labels again (commands call it once they hold the project's lock)."""
        self.records, self.rejected = self.store.read_images()
        self.labels = self.store.read_labels(len(self.records))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def images(self) -> ImageCollection:
        return ImageCollection(self.root, self.records, self.meta["image_settings"])

    def dataset(self):
        """Every image (index = id) with the labels known so far, streamed from disk."""
        return self.schema.dataset(self.images, self.labels.answers(), self.classes)

    def catalog(self) -> Catalog:
        return Catalog(self.records, self.document_prefix)

    # ------------------------------------------------------------------ init and add
    @classmethod
    def init(cls, path: str | Path, *, task: str, images: str | Path, classes: Sequence[str] | None = None,
             labels: str | Path | None = None, val: str | Path | None = None, seed: int = 0,
             image_url: str = LOCAL_FILES, document_root: str | Path | None = None, allow_empty: bool = False,
             progress: bool = False, log: Log | None = None) -> "Project":
        """Record every image under ``images`` and the labels given; nothing is written unless all of it is valid."""
        log = log or _quiet
        path, images = Path(path), Path(images)
        plugin, schema = _schema(task)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise StateError(f"{path} already exists and is not empty; choose a new project folder")
        if "{path}" not in image_url:
            raise ConfigError(f"--image-url {image_url!r} must contain {{path}} (where the image's path goes)")
        prefix = _prefix(images, document_root)
        given = [f for f in (labels, val) if f is not None]
        if classes is None:  # the classes the label files use, in the order they first appear
            classes = []
            for f in given:
                classes += [name for name in class_names_in(Path(f)) if name not in classes]
            if not classes:
                raise ConfigError("give the classes (--classes a,b,c or --classes-file FILE), or label files that use "
                                  "them (--labels)")
        classes = check_classes(classes, minimum=2 if plugin.name == "classification" else 1)
        found = scan(images, skip=[path], progress=progress)
        if not found.records:
            raise DataError(f"{images} holds no image that could be decoded" + (
                f" ({len(found.rejected)} file(s) could not: the first, {found.rejected[0]['path']}: "
                f"{found.rejected[0]['reason']})" if found.rejected else " (png, jpg, bmp, gif, webp or tif files)"))
        catalog = Catalog(found.records, prefix)
        state = Labels()
        for f, split in ((labels, "train"), (val, "val")):
            if f is None:
                continue
            _, entries = read_entries(Path(f), schema, catalog, classes)
            plan = plan_import(entries, state, str(f), ImportOptions(allow_unrequested=True, split=split,
                                                                     allow_empty=allow_empty),
                               round_index=0, empty_answer=schema.empty_answer)
            state = apply_plan(state, plan, {"file": str(f), "hash": file_hash(Path(f)), "merged": len(plan.merged),
                                             "split": split, "when": _now()})
        settings = schema.image_settings(images, found.records)
        meta = {"format": FORMAT, "version": VERSION, "task": task, "images_root": str(images.resolve()),
                "classes": classes, "image_settings": settings, "seed": int(seed), "created": _now(),
                "label_studio": {"image_url": image_url, "document_prefix": prefix}}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.init-", dir=path.parent))
        try:
            store = ProjectStore(tmp)
            store.write_images(found.records, found.rejected)
            store.write_labels(state)
            store.write_meta(meta)
            if path.exists():
                path.rmdir()
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        counts = Counter(e["split"] for e in state.labels.values())
        log(f"recorded {len(found.records)} images of {images} in {path}"
            + (f"; {len(found.rejected)} could not be decoded and are left out (the first: "
               f"{found.rejected[0]['path']}: {found.rejected[0]['reason']}; all are listed in images.json)"
               if found.rejected else "")
            + f"; {len(classes)} classes; {counts.get('train', 0)} training and {counts.get('val', 0)} reference "
              "label(s)")
        return cls(path)

    def add(self, folder: str | Path | None = None, *, progress: bool = False, log: Log | None = None) -> int:
        """Record the images under ``folder`` (default: the whole image folder) that the project does not hold yet;
        existing ids never change. A recorded image whose file changed is an error (nothing is written)."""
        log = log or _quiet
        under = Path(folder) if folder is not None else self.root
        try:
            under.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise ConfigError(f"{under} is not under the project's image folder {self.root}; move the images there "
                              "(image ids are paths relative to it)") from None
        with FolderLock(self.path, log):
            self.reload()  # what another command changed since this object read the project
            known = {r.path: r for r in self.records}
            found = scan(self.root, known, skip=[self.path], progress=progress, under=under)
            if found.changed:
                first, why = found.changed[0]
                raise DataError(f"{len(found.changed)} recorded image(s) changed on disk (the first: {first}: {why}); "
                                "an image keeps its id only while its content stays the same: restore the file(s), or "
                                "save changed images under new names")
            rejected_before = {r["path"] for r in self.rejected}
            rejected = self.rejected + [r for r in found.rejected if r["path"] not in rejected_before]
            records = list(self.records) + found.records
            self.store.write_images(records, rejected)
            self.records, self.rejected = records, rejected
        new_rejected = [r for r in found.rejected if r["path"] not in rejected_before]
        log(f"added {len(found.records)} new image(s) ({len(records)} in all)"
            + (f"; {len(new_rejected)} could not be decoded and are left out" if new_rejected else "")
            + (f"; {len(found.missing)} recorded image(s) are missing from disk" if found.missing else ""))
        return len(found.records)

    # ------------------------------------------------------------------ query
    def next_round(self) -> int:
        """The round a query works on: an unfinished one, else one after the last."""
        rounds = self.store.rounds()
        if rounds and self.store.query_record(rounds[-1]) is None:
            return rounds[-1]
        return (rounds[-1] + 1) if rounds else 1

    def query(self, strategy: str = "isal", budget: int = 100, *, progress: bool = False, log: Log | None = None,
              **options) -> dict[str, Any]:
        """Train on the current labels, choose ``budget`` images and write ``queries/<round>/``; returns the round's
        record (query.json). ``options`` are :class:`~influal.project.query.QueryRequest`'s fields."""
        log = log or _quiet
        request = QueryRequest(strategy=strategy, budget=budget, **options)
        work = QueryRound(self, request, progress=progress and dist.is_main(), log=log if dist.is_main() else None)
        # The lock is held from the checks on (they read the labels; an import must not slip in between): a refusal
        # releases it and leaves the project's files as they were.
        with FolderLock(self.path, log) if dist.is_main() else contextlib.nullcontext():
            dist.barrier()  # rank 0 holds the lock before any rank reads the project
            self.reload()
            work.prepare()
            if dist.is_main():
                clean_temporary([self.path])
            record = work.run()
            dist.barrier()
        return record

    def mark_pending(self, splits: dict[int, str], round_index: int) -> None:
        """Record that ``splits``' images were asked for in ``round_index`` (train or val); one atomic write."""
        pending = {i: p for i, p in self.labels.pending.items() if p["round"] != round_index}
        pending.update({int(i): {"round": round_index, "split": s} for i, s in splits.items()})
        labels = Labels(self.labels.labels, pending, self.labels.imports)
        self.store.write_labels(labels)
        self.labels = labels

    # ------------------------------------------------------------------ import
    def import_labels(self, file: str | Path, *, allow_unrequested: bool = False, partial: bool = False,
                      allow_empty: bool = False, split: str = "train", only_requested: bool = False,
                      log: Log | None = None) -> dict[str, Any]:
        """Merge a Label Studio JSON export, a CSV or a COCO json; raises LabelImportError (listing every problem)
        and changes nothing if any answer is not valid."""
        log = log or _quiet
        if split not in ("train", "val"):
            raise ConfigError(f"--split must be train or val, got {split!r}")
        file = Path(file)
        with FolderLock(self.path, log):
            self.reload()
            kind, entries = read_entries(file, self.schema, self.catalog(), self.classes)
            options = ImportOptions(allow_unrequested, partial, allow_empty, split, only_requested)
            plan = plan_import(entries, self.labels, str(file), options, round_index=None,
                               empty_answer=self.schema.empty_answer)
            merged = apply_plan(self.labels, plan, {"file": str(file), "format": kind, "hash": file_hash(file),
                                                    "merged": len(plan.merged), "when": _now()})
            if plan.merged:
                self.store.write_labels(merged)
                self.labels = merged
        message = plan.summary(str(file), len(self.labels.pending))
        log(message)
        return {"format": kind, "merged": len(plan.merged), "by_split": dict(plan.by_split),
                "unrequested": plan.unrequested, "ignored": plan.ignored, "unchanged": plan.unchanged,
                "left_pending": plan.left_pending,
                "pending": len(self.labels.pending), "message": message}

    # ------------------------------------------------------------------ status
    def status(self, *, plot: bool = True) -> dict[str, Any]:
        from .status import project_status

        return project_status(self, plot=plot)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
