"""The files of a query batch, for annotators and their tools: batch.csv, tasks.json with labeling-config.xml
(Label Studio), batch.coco.json (tools that speak COCO; tasks whose schema writes boxes)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

from ..api import ImageRecord, LabelSchema
from ..core.io import atomic_write_json, atomic_write_text

LOCAL_FILES = "/data/local-files/?d={path}"


@dataclass
class BatchItem:
    """One image of a batch: its record, rank (1 = wanted most), score (None: the strategy gives none), split it
    is asked for (train, or val for the reference set) and the model's prediction (None: no model yet)."""

    record: ImageRecord
    rank: int
    score: float | None
    split: str
    prediction: dict[str, Any] | None


def image_url(record: ImageRecord, template: str, prefix: str) -> str:
    """The URL tasks.json gives Label Studio for an image: ``template`` with ``{path}`` = the image's path under
    Label Studio's document root (``prefix`` is the image folder's place there), URL-quoted."""
    path = f"{prefix.rstrip('/')}/{record.path}" if prefix and prefix != "." else record.path
    return template.replace("{path}", quote(path))


def batch_csv(items: Sequence[BatchItem], schema: LabelSchema) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "path", "rank", "score", "split", "predicted", "confidence"])
    for item in items:
        columns = schema.csv_columns(item.prediction) if item.prediction is not None else {}
        score = "" if item.score is None or not math.isfinite(item.score) else repr(float(item.score))
        writer.writerow([item.record.id, item.record.path, item.rank, score, item.split,
                         columns.get("predicted", ""), columns.get("confidence", "")])
    return buf.getvalue()


def label_studio_tasks(items: Sequence[BatchItem], schema: LabelSchema, round_index: int, template: str,
                       prefix: str) -> list[dict[str, Any]]:
    tasks = []
    for item in items:
        data = {"image": image_url(item.record, template, prefix), "influal_id": item.record.id,
                "path": item.record.path, "influal_round": round_index, "influal_rank": item.rank,
                "influal_split": item.split}
        if item.score is not None and math.isfinite(item.score):
            data["influal_score"] = item.score
        task: dict[str, Any] = {"data": data}
        if item.prediction is not None:
            task["predictions"] = [{"model_version": f"influal-round-{round_index}",
                                    "score": item.prediction.get("confidence", 0.0),
                                    "result": schema.to_label_studio(item.prediction, item.record)}]
        tasks.append(task)
    return tasks


def batch_coco(items: Sequence[BatchItem], schema: LabelSchema, classes: Sequence[str]) -> dict[str, Any]:
    images, annotations = [], []
    for item in items:
        r = item.record
        images.append({"id": r.id, "file_name": r.path, "width": r.width, "height": r.height,
                       "influal_rank": item.rank, "influal_split": item.split})
        if item.prediction is not None:
            for ann in schema.to_coco(item.prediction, r, classes):
                annotations.append({"id": len(annotations) + 1, **ann})
    return {"info": {"description": "influal query batch: predicted boxes (score) for annotators to correct"},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}


def write_batch(folder: Path, items: Sequence[BatchItem], schema: LabelSchema, classes: Sequence[str],
                round_index: int, template: str, prefix: str) -> list[str]:
    """Write batch.csv, tasks.json, labeling-config.xml and (for box tasks) batch.coco.json; returns their names."""
    atomic_write_text(folder / "batch.csv", batch_csv(items, schema))
    atomic_write_json(folder / "tasks.json", label_studio_tasks(items, schema, round_index, template, prefix))
    atomic_write_text(folder / "labeling-config.xml", schema.label_config(classes))
    names = ["batch.csv", "tasks.json", "labeling-config.xml"]
    if type(schema).to_coco is not LabelSchema.to_coco:
        atomic_write_json(folder / "batch.coco.json", batch_coco(items, schema, classes))
        names.append("batch.coco.json")
    return names
