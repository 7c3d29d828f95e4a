"""Property-based tests of the COCO loader: valid dicts round-trip, corrupted ones are a DataError and nothing else."""

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from influal.core.errors import DataError
from influal.tasks.detection.datasets.coco import CocoDetectionDataset

FAST = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
ROOT = "/nonexistent-image-folder"  # building a data set reads no image


@st.composite
def coco_dicts(draw, min_annotations=0):
    """A valid COCO detection dict: unique integer ids, boxes inside their images (quarter-pixel coordinates,
    exact in float32), crowd flags, annotation ids on all annotations or on none."""
    category_ids = draw(st.lists(st.integers(1, 500), min_size=1, max_size=5, unique=True))
    image_ids = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=6, unique=True))
    with_sizes = draw(st.booleans())
    images, annotations = [], []
    for image_id in image_ids:
        width, height = draw(st.integers(4, 64)), draw(st.integers(4, 64))
        info = {"id": image_id, "file_name": f"images/{image_id}.png"}
        if with_sizes:
            info.update(width=width, height=height)
        images.append(info)
        for _ in range(draw(st.integers(0, 3))):
            x4 = draw(st.integers(0, 4 * width - 1))
            y4 = draw(st.integers(0, 4 * height - 1))
            w4 = draw(st.integers(1, 4 * width - x4))
            h4 = draw(st.integers(1, 4 * height - y4))
            ann = {"image_id": image_id, "category_id": draw(st.sampled_from(category_ids)),
                   "bbox": [x4 / 4, y4 / 4, w4 / 4, h4 / 4]}
            crowd = draw(st.sampled_from([None, 0, 1]))
            if crowd is not None:
                ann["iscrowd"] = crowd
            annotations.append(ann)
    if min_annotations and len(annotations) < min_annotations:
        info = images[0]
        annotations.append({"image_id": info["id"], "category_id": category_ids[0], "bbox": [0, 0, 1, 2]})
    order = draw(st.permutations(range(len(annotations))))
    annotations = [annotations[k] for k in order]
    if draw(st.booleans()):
        ids = draw(st.lists(st.integers(1, 10**6), min_size=len(annotations), max_size=len(annotations), unique=True))
        for ann, ann_id in zip(annotations, ids):
            ann["id"] = ann_id
    categories = [{"id": c, "name": f"c{c}"} for c in category_ids]
    return {"images": images, "annotations": annotations, "categories": draw(st.permutations(categories))}


def _expected_targets(coco):
    label_of = {c: k + 1 for k, c in enumerate(sorted(cat["id"] for cat in coco["categories"]))}
    out = []
    for info in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == info["id"] and not a.get("iscrowd", 0)]
        out.append(([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                    [label_of[a["category_id"]] for a in anns]))
    return out


@FAST
@given(coco_dicts(), st.data())
def test_valid_coco_dicts_round_trip(coco, data):
    original = copy.deepcopy(coco)
    ds = CocoDetectionDataset(coco, ROOT)
    assert coco == original  # the input is not modified
    assert len(ds) == len(coco["images"]) and ds.num_classes == len(coco["categories"])
    assert ds.category_ids == sorted(c["id"] for c in coco["categories"])
    for i, (boxes, labels) in enumerate(_expected_targets(coco)):
        target = ds.target(i)
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (len(boxes), 4)
        assert target["boxes"].tolist() == boxes and target["labels"].tolist() == labels
        assert ds.image_id(i) == coco["images"][i]["id"]
    per_image = [sum(a["image_id"] == info["id"] for a in coco["annotations"]) for info in coco["images"]]
    assert ds.boxes_per_image().tolist() == per_image
    # coco_subset keeps the chosen images in order, all their annotations (crowd ones included) and every category
    ids = data.draw(st.lists(st.integers(0, len(ds) - 1), unique=True, max_size=len(ds)), label="ids")
    sub = ds.coco_subset(ids)
    assert sub["images"] == [coco["images"][i] for i in ids]
    chosen = [coco["images"][i]["id"] for i in ids]
    kept = [a for image_id in chosen for a in coco["annotations"] if a["image_id"] == image_id]
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in sub["annotations"]] == \
        [(a["image_id"], a["category_id"], a["bbox"]) for a in kept]
    assert all(a["iscrowd"] == a_in.get("iscrowd", 0) for a, a_in in zip(sub["annotations"], kept))
    assert all(math.isclose(a["area"], a["bbox"][2] * a["bbox"][3]) for a in sub["annotations"])
    sub_ids = [a["id"] for a in sub["annotations"]]
    assert len(set(sub_ids)) == len(sub_ids) and all(isinstance(i, int) for i in sub_ids)
    assert all("id" not in a or a["id"] == s["id"] for a, s in zip(kept, sub["annotations"]))
    assert sorted(c["id"] for c in sub["categories"]) == ds.category_ids
    # ... and a data set built from it (subset) has the same targets
    part = ds.subset(ids)
    assert part.category_ids == ds.category_ids
    for new, old in enumerate(ids):
        assert part.target(new)["boxes"].tolist() == ds.target(old)["boxes"].tolist()
        assert part.target(new)["labels"].tolist() == ds.target(old)["labels"].tolist()


NON_INTS = st.sampled_from(["1", 1.0, 2.5, None, True, [1], float("nan")])
NON_FINITE = st.sampled_from([float("nan"), float("inf"), -float("inf")])


CORRUPTIONS = ["drop annotation key", "drop image key", "drop category id", "drop top key", "non-finite coordinate",
               "negative size", "zero size", "unknown category", "non-int image id", "non-int annotation image_id",
               "non-int category id", "non-int annotation id", "non-int category_id", "short bbox",
               "escaping file_name", "box outside", "duplicate image id"]


@st.composite
def corrupted(draw, kind):
    """A valid dict with one thing broken (``kind``)."""
    coco = draw(coco_dicts(min_annotations=1))
    ann = draw(st.sampled_from(coco["annotations"]))
    info = draw(st.sampled_from(coco["images"]))
    cat = draw(st.sampled_from(coco["categories"]))
    if kind == "drop annotation key":
        del ann[draw(st.sampled_from(["bbox", "image_id", "category_id"]))]
    elif kind == "drop image key":
        del info[draw(st.sampled_from(["id", "file_name"]))]
    elif kind == "drop category id":
        del cat["id"]
    elif kind == "drop top key":
        del coco[draw(st.sampled_from(["images", "annotations", "categories"]))]
    elif kind == "non-finite coordinate":
        ann["bbox"][draw(st.integers(0, 3))] = draw(NON_FINITE)
    elif kind == "negative size":
        ann["bbox"][draw(st.sampled_from([2, 3]))] = -draw(st.floats(0.25, 100))
    elif kind == "zero size":
        ann["bbox"][draw(st.sampled_from([2, 3]))] = 0
        ann["iscrowd"] = 0
    elif kind == "unknown category":
        ann["category_id"] = max(c["id"] for c in coco["categories"]) + draw(st.integers(1, 5))
    elif kind == "non-int image id":
        info["id"] = draw(NON_INTS)
    elif kind == "non-int annotation image_id":
        ann["image_id"] = draw(NON_INTS)
    elif kind == "non-int category id":
        cat["id"] = draw(NON_INTS)
    elif kind == "non-int annotation id":
        ann["id"] = draw(NON_INTS)
    elif kind == "non-int category_id":
        ann["category_id"] = draw(NON_INTS)
    elif kind == "short bbox":
        ann["bbox"] = ann["bbox"][:draw(st.integers(0, 3))]
    elif kind == "escaping file_name":
        info["file_name"] = draw(st.sampled_from(["../x.png", "/abs/x.png", "a/../../x.png", "", "C:/x.png"]))
    elif kind == "box outside":
        if "width" not in info:
            info.update(width=64, height=64)
        ann["image_id"] = info["id"]
        ann["bbox"][draw(st.sampled_from([0, 1]))] = draw(st.sampled_from([-10.0, 200.0]))
    elif kind == "duplicate image id":
        coco["images"].append({**coco["images"][0], "file_name": "images/another.png"})
    else:
        raise AssertionError(kind)
    return coco


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_coco_dicts_are_a_data_error_and_nothing_else(kind):
    @settings(FAST, max_examples=15)
    @given(corrupted(kind))
    def check(coco):
        with pytest.raises(DataError) as info:
            CocoDetectionDataset(coco, ROOT, source="train.json")
        message = str(info.value)
        assert message.startswith("train.json") and "\n" not in message, message

    check()
