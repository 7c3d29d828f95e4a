"""Label files as a project reads them: a Label Studio JSON export, a CSV (``path,label`` and, for boxes,
``x,y,width,height``), or a COCO json. Each is turned into one :class:`Entry` per image it names, with the task's
answer (through its :class:`~influal.api.LabelSchema`) or the problems found; nothing here changes a project.

Images are found by their influal id (``data.influal_id`` in Label Studio tasks that influal wrote), else by their
path relative to the project's image folder (a CSV ``path``, a COCO ``file_name``, the ``d=`` of a Label Studio
local-files URL, or the longest tail of a URL's path that names a recorded image).
"""

from __future__ import annotations

import csv
import io
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlparse

from ..api import Answer, ImageRecord, LabelSchema
from ..core.errors import DataError

MAX_LABEL_FILE = 2 << 30  # 2 GiB


def normal_path(path: str) -> str:
    """One spelling of a relative path: POSIX separators, no ``./``, no doubled slashes."""
    text = posixpath.normpath(str(path).strip().replace("\\", "/"))
    return text[2:] if text.startswith("./") else text


@dataclass
class Entry:
    """One image named by a label file: where (``task 12``, ``line 3``, ``image 5``), which image (None: not in the
    project), and its answer, or why there is none (``skipped``, ``unanswered``, ``invalid``: see ``problems``)."""

    where: str
    name: str
    record: ImageRecord | None
    status: str = "answer"
    answer: Answer | None = None
    problems: list[str] = field(default_factory=list)


class Catalog:
    """Finds a project's images by id, path or URL."""

    def __init__(self, records: Sequence[ImageRecord], document_prefix: str = ""):
        self.records = list(records)
        self.by_path = {normal_path(r.path): r for r in self.records}
        self.document_prefix = document_prefix  # the image folder relative to Label Studio's document root

    def by_id(self, value: Any) -> ImageRecord | None:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return None
        try:
            i = int(value)
        except ValueError:
            return None
        return self.records[i] if 0 <= i < len(self.records) else None

    def find(self, path: str) -> ImageRecord | None:
        return self.by_path.get(normal_path(path))

    def from_url(self, url: str) -> ImageRecord | None:
        parsed = urlparse(url)
        local = parse_qs(parsed.query).get("d")
        if local:
            rel = normal_path(local[0])
            prefix = normal_path(self.document_prefix) if self.document_prefix else ""
            if prefix and prefix != "." and rel.startswith(prefix + "/"):
                rel = rel[len(prefix) + 1:]
            found = self.find(rel)
            if found is not None:
                return found
        parts = [p for p in unquote(parsed.path).split("/") if p]
        for start in range(len(parts)):  # the longest tail of the URL's path that is a recorded image
            found = self.find("/".join(parts[start:]))
            if found is not None:
                return found
        return None


def detect_format(path: Path) -> tuple[str, Any]:
    """(``csv`` | ``label-studio`` | ``coco``, the parsed content); a DataError when it is none of them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist" + (" (it is a folder)" if path.exists() else ""))
    if path.stat().st_size > MAX_LABEL_FILE:
        raise DataError(f"label file {path} is larger than 2 GiB; split it")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"label file {path} is not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        return "csv", text
    import json

    try:
        data = json.loads(text)
    except ValueError as exc:
        if path.suffix.lower() == ".json":
            raise DataError(f"label file {path} is not valid JSON ({exc})") from None
        return "csv", text
    if isinstance(data, list):
        if data and all(isinstance(t, dict) and "data" not in t and "annotations" not in t for t in data):
            raise DataError(f"{path} looks like Label Studio's JSON-MIN export; export the project as JSON (the full "
                            "format, with annotations) instead")
        return "label-studio", data
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        return "coco", data
    raise DataError(f"{path} is neither a Label Studio JSON export (a list of tasks) nor a COCO json (images, "
                    "annotations, categories) nor a CSV (path,label)")


def class_names_in(path: Path) -> list[str]:
    """The class names a label file uses (COCO: its categories in id order; CSV and Label Studio: sorted)."""
    kind, data = detect_format(path)
    if kind == "coco":
        cats = [c for c in data.get("categories", []) if isinstance(c, dict) and "id" in c]
        return [str(c.get("name", c["id"])) for c in sorted(cats, key=lambda c: str(c["id"]).zfill(12))]
    names: set[str] = set()
    if kind == "csv":
        for row in csv.DictReader(io.StringIO(data)):
            label = (row.get("label") or "").strip()
            if label:
                names.add(label)
        return sorted(names)
    for task in data:
        for ann in (task.get("annotations") or []) if isinstance(task, dict) else []:
            for item in (ann.get("result") or []) if isinstance(ann, dict) else []:
                value = item.get("value") if isinstance(item, dict) and isinstance(item.get("value"), dict) else {}
                for key in ("choices", "rectanglelabels", "labels"):
                    names.update(v for v in value.get(key, []) or [] if isinstance(v, str))
    return sorted(names)


def read_entries(path: Path, schema: LabelSchema, catalog: Catalog, classes: Sequence[str]) -> tuple[str, list[Entry]]:
    """Every image entry of a label file (its format detected), with answers or problems."""
    kind, data = detect_format(path)
    reader = {"csv": _csv_entries, "label-studio": _label_studio_entries, "coco": _coco_entries}[kind]
    return kind, reader(data, schema, catalog, classes)


# ---------------------------------------------------------------------------------------------- CSV
def _csv_entries(text: str, schema: LabelSchema, catalog: Catalog, classes: Sequence[str]) -> list[Entry]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "path" not in header or "label" not in header:
        raise DataError(f"a CSV label file needs a header with the columns path and label (found: "
                        f"{', '.join(header) or 'no header'})")
    reader.fieldnames = header
    rows: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for line, row in enumerate(reader, start=2):
        if None in row:
            return [Entry(f"line {line}", "", None, "invalid", problems=[
                f"has {len(header) + len(row[None])} fields, but the header has {len(header)}"])]
        rows[normal_path(row.get("path") or "")].append((line, {k: (v or "").strip() for k, v in row.items()}))
    out = []
    for name, items in rows.items():
        where = f"line {items[0][0]}" + (f" (and {len(items) - 1} more)" if len(items) > 1 else "")
        record = catalog.find(name) if name and name != "." else None
        entry = Entry(where, name, record)
        if record is None:
            entry.status = "invalid"
            entry.problems = ["has an empty path"] if name in ("", ".") else []
        else:
            entry.answer, entry.problems = schema.from_csv([r for _, r in items], record, classes)
            entry.status = "answer" if entry.answer is not None and not entry.problems else "invalid"
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------- COCO
def _coco_entries(data: dict, schema: LabelSchema, catalog: Catalog, classes: Sequence[str]) -> list[Entry]:
    categories = {}
    for cat in data.get("categories") or []:
        if isinstance(cat, dict) and isinstance(cat.get("id"), int):
            categories[cat["id"]] = str(cat.get("name", cat["id"]))
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for ann in data.get("annotations") or []:
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
    out, seen = [], set()
    for k, info in enumerate(data["images"]):
        if not isinstance(info, dict) or not isinstance(info.get("file_name"), str):
            out.append(Entry(f"images[{k}]", "", None, "invalid", problems=["has no file_name"]))
            continue
        name = normal_path(info["file_name"])
        where = f"image {info.get('id', k)}"
        record = catalog.find(name)
        entry = Entry(where, name, record)
        seen.add(info.get("id"))
        if record is None:
            entry.status = "invalid"
        else:
            for side, mine in (("width", record.width), ("height", record.height)):
                if side in info and info[side] != mine:
                    entry.problems.append(f"has {side} {info[side]}, but the image file is {mine} pixels")
            answer, problems = schema.from_coco(by_image.get(info.get("id"), []), categories, record, classes)
            entry.problems += problems
            entry.answer = answer
            entry.status = "answer" if answer is not None and not entry.problems else "invalid"
        out.append(entry)
    orphans = sorted({str(i) for i in by_image if i not in seen})
    if orphans:
        out.append(Entry("annotations", "", None, "invalid", problems=[
            f"{len(orphans)} image id(s) of annotations are not among the file's images (e.g. {orphans[0]})"]))
    return out


# ---------------------------------------------------------------------------------------------- Label Studio
def _label_studio_entries(tasks: list, schema: LabelSchema, catalog: Catalog, classes: Sequence[str]) -> list[Entry]:
    out = []
    for k, task in enumerate(tasks):
        where = f"task {task.get('id', k + 1)}" if isinstance(task, dict) else f"task #{k + 1}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            out.append(Entry(where, "", None, "invalid", problems=["is not a Label Studio task (it has no data)"]))
            continue
        data = task["data"]
        record, name, problems = _task_image(data, catalog)
        entry = Entry(where, name, record, problems=problems)
        out.append(entry)
        if record is None or problems:
            entry.status = "invalid"
            continue
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, dict)]
        done = [a for a in annotations if not a.get("was_cancelled")]
        if not done:
            entry.status = "skipped" if annotations else "unanswered"
            continue
        answers = []
        for ann in done:
            result = ann.get("result")
            if not isinstance(result, list):
                entry.problems.append(f"annotation {ann.get('id', '?')} has no result list")
                continue
            if not result:
                if schema.empty_answer is None:
                    entry.problems.append(f"annotation {ann.get('id', '?')} is empty (nothing was chosen)")
                else:
                    answers.append(dict(schema.empty_answer))
                continue
            answer, problems = schema.from_label_studio(result, record, classes)
            entry.problems += [f"annotation {ann.get('id', '?')} {p}" for p in problems]
            if answer is not None:
                answers.append(answer)
        if not entry.problems:
            distinct = {_canonical(a) for a in answers}
            if len(distinct) > 1:
                entry.problems.append(f"has {len(done)} annotations that disagree; resolve them in Label Studio")
            else:
                entry.answer = answers[0]
        entry.status = "answer" if entry.answer is not None and not entry.problems else "invalid"
    return out


def _task_image(data: dict, catalog: Catalog) -> tuple[ImageRecord | None, str, list[str]]:
    url = data.get("image")
    if "influal_id" in data:
        record = catalog.by_id(data["influal_id"])
        if record is None:
            return None, str(data.get("path", url)), [f"has influal_id {data['influal_id']!r}, which is not an image "
                                                      "of this project"]
        if "path" in data and normal_path(str(data["path"])) != normal_path(record.path):
            return None, str(data["path"]), [f"has influal_id {record.id}, which is {record.path!r} in this project, "
                                             f"but names {data['path']!r}; was it exported from another project?"]
        return record, record.path, []
    if not isinstance(url, str) or not url:
        return None, "", ["has no image (data.image)"]
    record = catalog.from_url(url)
    return record, (record.path if record is not None else url), []


def _canonical(answer: Answer) -> str:
    import json

    return json.dumps(answer, sort_keys=True)
