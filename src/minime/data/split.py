"""Step 6 of `minime data`: a train/validation split, stratified by category."""

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
    per_category: dict[str, dict[str, int]]


def split(src: Path, train: Path, val: Path, val_fraction: float, seed: int) -> SplitReport:
    """Split the answered rows of `src` into `train` and `val`, category by category.

    Every category with at least two rows has at least one in each split.
    """
    by_category: dict[str, list[dict]] = defaultdict(list)
    for row in load_jsonl(src):
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
    write_jsonl(train, train_rows)
    write_jsonl(val, val_rows)
    return SplitReport(train=len(train_rows), val=len(val_rows), per_category=counts)
