"""Step 8 of `minime data`: a train/validation split, stratified by category, and follow-ups.

The widget sends the visitor's earlier turns with each question, so some training rows are
also written as the second question of a short conversation: another row's question and
answer first, then theirs. The answer stays the one checked for the question alone.

A rephrasing (a row with `rephrase_of`) goes where its source goes, so that no
validation question is trained on in other words; rephrasings of validation rows are left
out.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from minime.jsonl import load_jsonl, write_jsonl


class SplitReport(BaseModel):
    """Rows per split and per category."""

    train: int
    val: int
    rephrasings: int
    followups: int
    per_category: dict[str, dict[str, int]]


def split(
    src: Path, train: Path, val: Path, val_fraction: float, seed: int, followups: float = 0.0
) -> SplitReport:
    """Split the answered rows of `src` into `train` and `val`, category by category.

    Every category with at least two rows has at least one in each split.

    :param followups: share of training rows added again as a conversation's second turn.
    """
    by_category: dict[str, list[dict]] = defaultdict(list)
    rephrasings: dict[str, list[dict]] = defaultdict(list)
    for row in load_jsonl(src):
        if row.get("rephrase_of"):
            rephrasings[row["rephrase_of"]].append(row)
        else:
            by_category[row["category"]].append(row)
    rng = random.Random(seed)
    train_rows, val_rows, counts = [], [], {}
    for category in sorted(by_category):
        rows = sorted(by_category[category], key=lambda r: r["id"])
        rng.shuffle(rows)
        n_val = round(len(rows) * val_fraction) if val_fraction else 0
        if val_fraction and len(rows) >= 2:
            n_val = min(max(n_val, 1), len(rows) - 1)
        val_rows += rows[:n_val]
        train_rows += rows[n_val:]
        counts[category] = {"train": len(rows) - n_val, "val": n_val}
    rephrased = [r for row in train_rows for r in rephrasings.get(row["id"], [])]
    extra = _followups(train_rows, followups, rng)
    write_jsonl(train, train_rows + rephrased + extra)
    write_jsonl(val, val_rows)
    return SplitReport(
        train=len(train_rows) + len(rephrased) + len(extra),
        val=len(val_rows),
        rephrasings=len(rephrased),
        followups=len(extra),
        per_category=counts,
    )


def _followups(rows: list[dict], share: float, rng: random.Random) -> list[dict]:
    """Copies of a `share` of single-turn `rows`, each after another row's question and answer."""
    single = [r for r in rows if len(r["messages"]) == 2]
    if len(single) < 2 or share <= 0:
        return []
    chosen = rng.sample(single, k=min(len(single), round(share * len(single))))
    extra = []
    for row in chosen:
        before = rng.choice(single)
        while before["id"] == row["id"]:
            before = rng.choice(single)
        extra.append(
            {
                **row,
                "id": f"{row['id']}-after-{before['id']}",
                "messages": before["messages"] + row["messages"],
            }
        )
    return extra
