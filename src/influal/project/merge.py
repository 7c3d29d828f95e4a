"""Importing answers: every entry of a label file is checked against the project before anything changes; the
merge is all or nothing (one atomic write of labels.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

from ..core.errors import DataError
from .formats import Entry
from .store import Labels

MAX_SHOWN = 20


class LabelImportError(DataError):
    """A label file that cannot be merged: ``problems`` holds one line per problem; nothing was changed."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = len(problems) - len(shown)
        lines = "\n".join(shown) + (f"\n... and {more} more problem(s)" if more else "")
        super().__init__(f"{len(problems)} problem(s) in {source}; nothing was merged\n{lines}")


@dataclass
class ImportOptions:
    """``allow_unrequested``: accept answers for images no query asked for (counted). ``partial``: merge what is
    answered and leave skipped and unanswered images pending. ``allow_empty``: an empty annotation means an image
    that holds nothing (detection). ``split``: where unrequested answers go (train or val). ``only_requested``:
    answers for images no query asked for are ignored (counted), e.g. a file of every image's answer."""

    allow_unrequested: bool = False
    partial: bool = False
    allow_empty: bool = False
    split: str = "train"
    only_requested: bool = False


@dataclass
class ImportPlan:
    """What an import would change, and the counts it reports."""

    merged: dict[int, dict] = field(default_factory=dict)
    unchanged: int = 0
    unrequested: int = 0
    ignored: int = 0
    left_pending: int = 0
    by_split: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})

    def summary(self, source: str, still_pending: int) -> str:
        parts = [f"{n} {split}" for split, n in self.by_split.items() if n]
        text = f"merged {len(self.merged)} answer(s) from {source}" + (f" ({', '.join(parts)})" if parts else "")
        extra = []
        if self.unrequested:
            extra.append(f"{self.unrequested} not asked for by a query")
        if self.ignored:
            extra.append(f"{self.ignored} not asked for and ignored")
        if self.unchanged:
            extra.append(f"{self.unchanged} already labeled the same way")
        if self.left_pending:
            extra.append(f"{self.left_pending} skipped or unanswered left pending")
        return text + (f"; {', '.join(extra)}" if extra else "") + f"; {still_pending} image(s) still pending"


def _same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_import(entries: Sequence[Entry], labels: Labels, source: str, options: ImportOptions, *,
                round_index: int | None = None, empty_answer: dict | None = None) -> ImportPlan:
    """The changes ``entries`` make to ``labels``, or a :class:`LabelImportError` listing every problem."""
    problems: list[str] = []
    plan = ImportPlan()
    seen: dict[int, tuple[str, dict | None]] = {}

    def problem(entry: Entry, text: str) -> None:
        name = f" ({entry.name})" if entry.name else ""
        problems.append(f"{source}: {entry.where}{name}: {text}")

    if options.only_requested and options.allow_unrequested:
        raise DataError("--only-requested and --allow-unrequested contradict each other; give one")
    for entry in entries:
        if entry.record is None:
            for text in entry.problems or ["is not an image of this project (run `influal add` for new images)"]:
                problem(entry, text)
            continue
        i = entry.record.id
        if i in seen:
            first_where, first = seen[i]
            if entry.answer is not None and first is not None and _same(first, entry.answer):
                continue
            problem(entry, f"answers the same image as {first_where}, differently; keep one answer")
            continue
        seen[i] = (entry.where, entry.answer)
        for text in entry.problems:
            problem(entry, text)
        if entry.status in ("skipped", "unanswered"):
            if options.partial:
                plan.left_pending += 1
            else:
                problem(entry, f"was {entry.status} in the labeling tool; finish it, or import with --partial to "
                               "merge the rest and leave it pending")
            continue
        if entry.status != "answer" or entry.answer is None:
            continue
        answer = entry.answer
        if empty_answer is not None and _same(answer, empty_answer) and not options.allow_empty:
            problem(entry, "has an empty annotation; if the image holds no object, import with --allow-empty")
            continue
        existing = labels.labels.get(i)
        if existing is not None:
            if _same(existing["answer"], answer):
                plan.unchanged += 1
            else:
                problem(entry, f"is already labeled differently (from {existing.get('source', '?')}); influal does "
                               "not overwrite labels")
            continue
        request = labels.pending.get(i)
        if request is None:
            if options.only_requested:
                plan.ignored += 1
                continue
            if not options.allow_unrequested:
                problem(entry, "was not asked for by a query; import with --allow-unrequested to accept it")
                continue
            plan.unrequested += 1
            split = options.split
        else:
            split = request["split"]
        plan.merged[i] = {"split": split, "answer": answer, "source": source,
                          "round": request["round"] if request is not None else round_index}
        plan.by_split[split] += 1
    if problems:
        raise LabelImportError(source, problems)
    return plan


def apply_plan(labels: Labels, plan: ImportPlan, record: dict) -> Labels:
    """``labels`` with the plan merged (a new object; the old one is unchanged)."""
    merged = Labels(labels={**labels.labels, **plan.merged},
                    pending={i: p for i, p in labels.pending.items() if i not in plan.merged},
                    imports=[*labels.imports, record])
    return merged
