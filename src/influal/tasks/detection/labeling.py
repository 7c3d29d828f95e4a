"""Detection labels for people and labeling tools: boxes with class names, in image pixels.

An answer is ``{"boxes": [{"label": "cat", "bbox": [x, y, w, h]}, ...]}`` (COCO's ``[x, y, width, height]`` in pixels
of the image file); a prediction's boxes add ``score``, and its ``confidence`` is the highest box score (0 for an
image with no box above the task's score threshold; boxes thinner than a pixel are dropped). Label Studio sees a ``RectangleLabels`` control named
``label`` on the image ``image`` (coordinates in percent of the image, as Label Studio stores them); CSV files hold
one ``path,label,x,y,width,height`` row per box; COCO files hold ``bbox`` entries with the project's category names.
An empty annotation means an image that holds no object (accepted only where the import allows it).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence
from xml.sax.saxutils import quoteattr

from ...api import Answer, ImageCollection, ImageRecord, LabelSchema
from .boxes import xyxy_to_xywh
from .datasets.coco import BORDER_SLACK, CocoDetectionDataset

MAX_IMAGE_SIZE = 800
MIN_BOX = 1.0  # predicted boxes thinner than a pixel (clipped at the border) are no pre-annotation anyone could use


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and abs(value) < 1e12


class DetectionLabels(LabelSchema):
    tool_kind = "rectanglelabels"
    empty_answer = {"boxes": []}

    # ------------------------------------------------------------------ data
    def image_settings(self, root, records: Sequence[ImageRecord]) -> dict[str, Any]:
        sides = Counter(max(r.width, r.height) for r in records)
        size = sides.most_common(1)[0][0] if sides else 128
        return {"image_size": int(max(32, min(MAX_IMAGE_SIZE, size)))}

    def input_shape(self, images: ImageCollection, classes: Sequence[str]) -> tuple[int, int, int]:
        return len(classes), 3, int(images.settings["image_size"])

    def dataset(self, images: ImageCollection, answers: dict[int, Answer], classes: Sequence[str]):
        index = {name: k + 1 for k, name in enumerate(classes)}
        annotations = []
        for i in sorted(answers):
            for box in answers[i]["boxes"]:
                annotations.append({"id": len(annotations) + 1, "image_id": int(i), "category_id": index[box["label"]],
                                    "bbox": [float(v) for v in box["bbox"]], "iscrowd": 0})
        coco = {"images": [{"id": r.id, "file_name": r.path, "width": r.width, "height": r.height}
                           for r in images.records],
                "annotations": annotations,
                "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)]}
        return CocoDetectionDataset(coco, images.root, name="project", cache=False,
                                    category_ids=list(range(1, len(classes) + 1)), source=str(images.root))

    def predict(self, task, model, dataset, ids: Sequence[int], classes: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for det in task.detect(model, dataset, ids):
            keep = det["scores"] >= task.score_threshold
            boxes = xyxy_to_xywh(det["boxes"][keep]).tolist()
            scores, labels = det["scores"][keep].tolist(), det["labels"][keep].tolist()
            found = [{"label": classes[int(k) - 1], "bbox": [round(v, 2) for v in b], "score": round(float(s), 6)}
                     for b, s, k in zip(boxes, scores, labels)
                     if 1 <= int(k) <= len(classes) and min(b[2], b[3]) >= MIN_BOX]
            out.append({"boxes": found, "confidence": max((b["score"] for b in found), default=0.0)})
        return out

    # ------------------------------------------------------------------ answers
    def check_answer(self, answer: Answer, record: ImageRecord, classes: Sequence[str]) -> list[str]:
        problems = []
        for k, box in enumerate(answer.get("boxes", [])):
            label, bbox = box.get("label"), box.get("bbox")
            if label not in classes:
                problems.append(f"box {k + 1} has class {label!r}, which is not among the project's {len(classes)} "
                                f"classes ({_listed(classes)})")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
                problems.append(f"box {k + 1} has bbox {bbox!r}; a box is four numbers [x, y, width, height]")
                continue
            x, y, w, h = bbox
            if w <= 0 or h <= 0:
                problems.append(f"box {k + 1} [{_fmt(bbox)}] has zero or negative area (width {w:g}, height {h:g})")
            elif (x < -BORDER_SLACK or y < -BORDER_SLACK or x + w > record.width + BORDER_SLACK
                  or y + h > record.height + BORDER_SLACK):
                problems.append(f"box {k + 1} [{_fmt(bbox)}] lies outside the image of {record.width}x{record.height} "
                                "pixels")
        return problems

    def cost(self, answer: Answer) -> float:
        return float(len(answer["boxes"]))

    def class_counts(self, answer: Answer) -> dict[str, int]:
        return dict(Counter(b["label"] for b in answer["boxes"]))

    # ------------------------------------------------------------------ formats
    def label_config(self, classes: Sequence[str]) -> str:
        labels = "\n".join(f"    <Label value={quoteattr(c)}/>" for c in classes)
        return ('<View>\n  <Image name="image" value="$image"/>\n'
                f'  <RectangleLabels name="label" toName="image">\n{labels}\n  </RectangleLabels>\n</View>\n')

    def to_label_studio(self, prediction: dict[str, Any], record: ImageRecord) -> list[dict[str, Any]]:
        out = []
        for k, box in enumerate(prediction["boxes"]):
            x, y, w, h = box["bbox"]
            out.append({"id": f"p{k + 1}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                        "original_width": record.width, "original_height": record.height, "image_rotation": 0,
                        "value": {"x": 100.0 * x / record.width, "y": 100.0 * y / record.height,
                                  "width": 100.0 * w / record.width, "height": 100.0 * h / record.height,
                                  "rotation": 0, "rectanglelabels": [box["label"]]},
                        "score": box["score"]})
        return out

    def from_label_studio(self, result: list[dict[str, Any]], record: ImageRecord,
                          classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        boxes, problems = [], []
        for item in result:
            if not isinstance(item, dict):
                return None, ["has a result item that is not an object"]
            if item.get("type") != "rectanglelabels":
                continue
            value = item.get("value") if isinstance(item.get("value"), dict) else {}
            names = value.get("rectanglelabels")
            where = f"region {item.get('id', len(boxes) + 1)}"
            if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
                problems.append(f"{where} has labels {names!r}; give each box one class")
                continue
            if value.get("rotation", 0) not in (0, 0.0, None):
                problems.append(f"{where} is rotated by {value.get('rotation')} degrees; influal reads upright boxes")
                continue
            for side, mine in (("original_width", record.width), ("original_height", record.height)):
                if side in item and item[side] != mine:
                    problems.append(f"{where} was drawn on an image of {side.split('_')[1]} {item[side]}, but the "
                                    f"image is {mine} pixels; was the file replaced?")
            coords = [value.get(k) for k in ("x", "y", "width", "height")]
            if not all(_number(v) for v in coords):
                problems.append(f"{where} has coordinates {coords!r}; expected x, y, width, height in percent")
                continue
            px, py, pw, ph = coords
            bbox = [px * record.width / 100.0, py * record.height / 100.0, pw * record.width / 100.0,
                    ph * record.height / 100.0]
            boxes.append({"label": names[0], "bbox": [round(v, 3) for v in bbox]})
        if problems:
            return None, problems
        answer = {"boxes": boxes}
        return answer, self.check_answer(answer, record, classes)

    def from_csv(self, rows: list[dict[str, str]], record: ImageRecord,
                 classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        boxes, problems = [], []
        for k, row in enumerate(rows):
            raw = [row.get(c) for c in ("x", "y", "width", "height")]
            label = (row.get("label") or "").strip()
            if not label and all(not (v or "").strip() for v in raw):
                continue  # a row that lists the image without a box: it holds no object
            try:
                bbox = [float(v) for v in raw]
            except (TypeError, ValueError):
                problems.append(f"row {k + 1} has box {raw!r}; give x, y, width and height as numbers")
                continue
            boxes.append({"label": label, "bbox": bbox})
        if problems:
            return None, problems
        answer = {"boxes": boxes}
        return answer, self.check_answer(answer, record, classes)

    def from_coco(self, annotations: list[dict[str, Any]], categories: dict[int, str], record: ImageRecord,
                  classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        boxes, problems = [], []
        for ann in annotations:
            where = f"annotation {ann.get('id', '?')}"
            if ann.get("iscrowd", 0):
                problems.append(f"{where} is a crowd region (iscrowd=1); influal labels single objects")
                continue
            name = categories.get(ann.get("category_id"))
            if name is None:
                problems.append(f"{where} has category {ann.get('category_id')!r}, which the file does not define")
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
                problems.append(f"{where} has bbox {bbox!r}; a bbox is four numbers [x, y, width, height]")
                continue
            boxes.append({"label": name, "bbox": [float(v) for v in bbox]})
        if problems:
            return None, problems
        answer = {"boxes": boxes}
        return answer, self.check_answer(answer, record, classes)

    def to_coco(self, prediction: dict[str, Any], record: ImageRecord, classes: Sequence[str]) -> list[dict[str, Any]]:
        index = {name: k + 1 for k, name in enumerate(classes)}
        return [{"image_id": record.id, "category_id": index[b["label"]], "bbox": b["bbox"],
                 "area": round(b["bbox"][2] * b["bbox"][3], 3), "iscrowd": 0, "score": b["score"]}
                for b in prediction["boxes"]]

    # ------------------------------------------------------------------ display
    def describe(self, prediction: dict[str, Any]) -> str:
        n = len(prediction["boxes"])
        return f"{n} box{'es' if n != 1 else ''} {prediction['confidence']:.2f}"

    def csv_columns(self, prediction: dict[str, Any]) -> dict[str, str]:
        import json

        return {"predicted": json.dumps(prediction["boxes"], separators=(",", ":")),
                "confidence": f"{prediction['confidence']:.6f}"}

    def drawn_boxes(self, prediction: dict[str, Any]) -> list[tuple[list[float], str]]:
        return [(b["bbox"], f"{b['label']} {b['score']:.2f}") for b in prediction["boxes"]]


def _fmt(values) -> str:
    return ", ".join(f"{float(v):g}" for v in values)


def _listed(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
