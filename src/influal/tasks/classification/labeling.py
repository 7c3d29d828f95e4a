"""Classification labels for people and labeling tools: one class name per image.

An answer is ``{"label": "cat"}``; a prediction adds ``confidence`` (the softmax probability of the predicted
class). Label Studio sees a single-choice ``Choices`` control named ``label`` on the image ``image``; CSV files
hold ``path,label`` rows.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from ...api import Answer, ImageCollection, ImageRecord, LabelSchema

MAX_IMAGE_SIZE = 224
SAMPLE = 200  # images opened to decide the channels


def common_size(records: Sequence[ImageRecord]) -> int:
    """The most common image side (the larger side where images are not square), capped at 224 pixels."""
    if not records:
        return 32
    sides = Counter(max(r.width, r.height) for r in records)
    return int(min(MAX_IMAGE_SIZE, sides.most_common(1)[0][0]))


def grayscale_only(root, paths: Sequence[str]) -> bool:
    """Whether every image of a seeded sample of ``paths`` is grayscale (modes L, LA, 1, I, I;16, F)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    sample = rng.choice(len(paths), size=min(SAMPLE, len(paths)), replace=False) if len(paths) else []
    for k in sample:
        with Image.open(root / paths[int(k)]) as img:
            if img.mode not in ("L", "LA", "1", "I", "I;16", "F"):
                return False
    return True


class ClassificationLabels(LabelSchema):
    tool_kind = "choices"

    # ------------------------------------------------------------------ data
    def image_settings(self, root, records: Sequence[ImageRecord]) -> dict[str, Any]:
        from .datasets.files import image_stats

        paths = [r.path for r in records]
        channels = 1 if grayscale_only(root, paths) else 3
        size = common_size(records)
        mean, std = image_stats(root, paths, channels, size)
        return {"image_size": size, "channels": channels, "mean": [round(float(m), 4) for m in mean],
                "std": [round(float(s), 4) for s in std]}  # image_stats floors the std at 1

    def input_shape(self, images: ImageCollection, classes: Sequence[str]) -> tuple[int, int, int]:
        return len(classes), int(images.settings["channels"]), int(images.settings["image_size"])

    def dataset(self, images: ImageCollection, answers: dict[int, Answer], classes: Sequence[str]):
        from .datasets.files import ImageFileDataset

        index = {name: k for k, name in enumerate(classes)}
        labels = np.full(len(images.records), -1, dtype=np.int64)
        for i, answer in answers.items():
            labels[int(i)] = index[answer["label"]]
        s = images.settings
        return ImageFileDataset(images.root, [r.path for r in images.records], labels, image_size=s["image_size"],
                                channels=s["channels"], mean=s["mean"], std=s["std"], classes=list(classes),
                                source=str(images.root))

    def predict(self, task, model, dataset, ids: Sequence[int], classes: Sequence[str]) -> list[dict[str, Any]]:
        probs = task.predict_proba(model, dataset, ids)
        conf, label = probs.max(dim=1) if len(probs) else (probs.new_zeros(0), probs.new_zeros(0).long())
        return [{"label": classes[int(k)], "confidence": round(float(c), 6)} for k, c in zip(label, conf)]

    # ------------------------------------------------------------------ answers
    def check_answer(self, answer: Answer, record: ImageRecord, classes: Sequence[str]) -> list[str]:
        label = answer.get("label")
        if not isinstance(label, str) or not label:
            return ["has no class"]
        if label not in classes:
            return [f"has class {label!r}, which is not among the project's {len(classes)} classes "
                    f"({_listed(classes)})"]
        return []

    def cost(self, answer: Answer) -> float:
        return 1.0

    def class_counts(self, answer: Answer) -> dict[str, int]:
        return {answer["label"]: 1}

    # ------------------------------------------------------------------ formats
    def label_config(self, classes: Sequence[str]) -> str:
        choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
        return ('<View>\n  <Image name="image" value="$image"/>\n'
                '  <Choices name="label" toName="image" choice="single" showInline="true" required="true">\n'
                f"{choices}\n  </Choices>\n</View>\n")

    def to_label_studio(self, prediction: dict[str, Any], record: ImageRecord) -> list[dict[str, Any]]:
        return [{"from_name": "label", "to_name": "image", "type": "choices",
                 "value": {"choices": [prediction["label"]]}}]

    def from_label_studio(self, result: list[dict[str, Any]], record: ImageRecord,
                          classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        chosen = []
        for item in result:
            if not isinstance(item, dict):
                return None, ["has a result item that is not an object"]
            if item.get("type") != "choices":
                continue
            value = item.get("value") if isinstance(item.get("value"), dict) else {}
            picks = value.get("choices")
            if not isinstance(picks, list) or not all(isinstance(c, str) for c in picks):
                return None, [f"has choices {picks!r}; expected a list of class names"]
            chosen.extend(picks)
        if not chosen:
            return None, ["has an annotation without a chosen class (an empty annotation)"]
        if len(set(chosen)) > 1:
            return None, [f"has {len(set(chosen))} classes chosen ({', '.join(sorted(set(chosen)))}); choose one"]
        answer = {"label": chosen[0]}
        return answer, self.check_answer(answer, record, classes)

    def from_csv(self, rows: list[dict[str, str]], record: ImageRecord,
                 classes: Sequence[str]) -> tuple[Answer | None, list[str]]:
        labels = {(row.get("label") or "").strip() for row in rows}
        if labels == {""}:
            return None, ["has an empty label"]
        labels.discard("")
        if len(labels) > 1:
            return None, [f"is given {len(labels)} different labels ({', '.join(sorted(labels))})"]
        answer = {"label": labels.pop()}
        return answer, self.check_answer(answer, record, classes)

    # ------------------------------------------------------------------ display
    def describe(self, prediction: dict[str, Any]) -> str:
        return f"pred {prediction['label']} {prediction['confidence']:.2f}"

    def csv_columns(self, prediction: dict[str, Any]) -> dict[str, str]:
        return {"predicted": prediction["label"], "confidence": f"{prediction['confidence']:.6f}"}


def _listed(names: Sequence[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")

