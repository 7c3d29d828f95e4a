"""A labeling project on disk. Every file is JSON, written atomically; ``labels.json`` is the only file an import
changes, so an import is merged whole or not at all.

::

    PROJECT/
      project.json        task, image folder, classes, image settings, seed, how tasks.json names images
      images.json         every image once: id, path (relative to the image folder), size, pixel size, hash;
                          and the files left out (could not be decoded)
      labels.json         labels: id -> split (train | val), answer, source, round; pending: id -> the query round
                          and split it was asked for in; imports: what was merged from which file
      queries/<round>/    request.json, model.pt, query.json (written last: the round is complete), batch.csv,
                          tasks.json, labeling-config.xml, batch.coco.json (detection), contact-sheet.png
      .influal.lock       while a command changes the project
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api import ImageRecord
from ..core.errors import StateError
from ..core.io import atomic_write_json, read_json
from .catalog import record_from_dict

FORMAT = "influal-project"
VERSION = 1
SPLITS = ("train", "val")


def _read(path: Path, what: str) -> Any:
    if not path.is_file():
        raise StateError(f"{path} is missing; is {path.parent} an influal project (made by `influal init`)?")
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise StateError(f"{path} ({what}) cannot be read ({exc}); restore it from a backup") from None


@dataclass
class Labels:
    """labels.json: what people answered, and what they were asked."""

    labels: dict[int, dict[str, Any]] = field(default_factory=dict)
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    imports: list[dict[str, Any]] = field(default_factory=list)

    def ids(self, split: str) -> list[int]:
        return sorted(i for i, entry in self.labels.items() if entry["split"] == split)

    def answers(self, split: str | None = None) -> dict[int, dict]:
        return {i: e["answer"] for i, e in self.labels.items() if split is None or e["split"] == split}

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION,
                "labels": {str(i): self.labels[i] for i in sorted(self.labels)},
                "pending": {str(i): self.pending[i] for i in sorted(self.pending)},
                "imports": self.imports}

    @classmethod
    def from_dict(cls, data: Any, where: str, size: int) -> "Labels":
        if not isinstance(data, dict) or not all(isinstance(data.get(k), t) for k, t in
                                                 (("labels", dict), ("pending", dict), ("imports", list))):
            raise StateError(f"{where} is not an influal labels file (labels, pending, imports)")
        out = cls(imports=list(data["imports"]))
        for key, part in (("labels", out.labels), ("pending", out.pending)):
            for raw_id, entry in data[key].items():
                try:
                    i = int(raw_id)
                except ValueError:
                    raise StateError(f"{where}: {key} has the id {raw_id!r}, which is not an image id") from None
                if not 0 <= i < size or not isinstance(entry, dict) or entry.get("split") not in SPLITS:
                    raise StateError(f"{where}: {key} entry {raw_id} is not a known image with a split "
                                     f"(train or val): {entry!r}")
                if key == "labels" and not isinstance(entry.get("answer"), dict):
                    raise StateError(f"{where}: label {raw_id} has no answer")
                part[i] = entry
        return out

    def fingerprint(self) -> str:
        """A hash of the labels (not of pending or imports): what a model trained on them depends on."""
        text = json.dumps({str(i): self.labels[i]["answer"] | {"split": self.labels[i]["split"]}
                           for i in sorted(self.labels)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class ProjectStore:
    """The files of one project folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def project_file(self) -> Path:
        return self.path / "project.json"

    @property
    def images_file(self) -> Path:
        return self.path / "images.json"

    @property
    def labels_file(self) -> Path:
        return self.path / "labels.json"

    @property
    def queries(self) -> Path:
        return self.path / "queries"

    def exists(self) -> bool:
        return self.project_file.is_file()

    # ------------------------------------------------------------------ project.json
    def read_meta(self) -> dict[str, Any]:
        meta = _read(self.project_file, "the project's settings")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StateError(f"{self.project_file} is not an influal project file")
        if meta.get("version") != VERSION:
            raise StateError(f"{self.project_file} is version {meta.get('version')!r}; this influal reads version "
                             f"{VERSION}")
        return meta

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.project_file, meta)

    # ------------------------------------------------------------------ images.json
    def read_images(self) -> tuple[list[ImageRecord], list[dict]]:
        data = _read(self.images_file, "the image catalog")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise StateError(f"{self.images_file} is not an influal image catalog")
        records = [record_from_dict(d, str(self.images_file)) for d in data["images"]]
        if any(r.id != k for k, r in enumerate(records)):
            raise StateError(f"{self.images_file}: image ids must be 0, 1, 2, ... in order; restore the file")
        return records, list(data.get("rejected", []))

    def write_images(self, records: list[ImageRecord], rejected: list[dict]) -> None:
        atomic_write_json(self.images_file, {"version": VERSION, "images": [r.to_dict() for r in records],
                                             "rejected": rejected})

    # ------------------------------------------------------------------ labels.json
    def read_labels(self, size: int) -> Labels:
        return Labels.from_dict(_read(self.labels_file, "the labels"), str(self.labels_file), size)

    def write_labels(self, labels: Labels) -> None:
        atomic_write_json(self.labels_file, labels.to_dict())

    # ------------------------------------------------------------------ queries
    def query_dir(self, round_index: int) -> Path:
        return self.queries / str(round_index)

    def rounds(self) -> list[int]:
        """The query rounds on disk (complete or not), in order."""
        if not self.queries.is_dir():
            return []
        return sorted(int(p.name) for p in self.queries.iterdir() if p.is_dir() and p.name.isdigit())

    def query_record(self, round_index: int) -> dict[str, Any] | None:
        """A complete round's query.json, or None while the round is unfinished."""
        path = self.query_dir(round_index) / "query.json"
        if not path.is_file():
            return None
        data = _read(path, "a query's record")
        if not isinstance(data, dict) or data.get("round") != round_index:
            raise StateError(f"{path} is not the record of query round {round_index}")
        return data

    def complete_rounds(self) -> list[dict[str, Any]]:
        return [r for r in (self.query_record(k) for k in self.rounds()) if r is not None]
