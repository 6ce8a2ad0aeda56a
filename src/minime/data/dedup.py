"""Step 4 of `minime data`: drop near-duplicate prompts, keeping one per cluster.

Reads `src` (a JSONL of PromptRecord) and writes:

- `dst`: the kept records, the same dicts unchanged, in input order;
- `report_dir/dedup_report.json`: the DedupReport (counts, largest clusters, threshold curve);
- `report_dir/dedup_thresholds.png`: compression ratio against threshold, to pick one;
- `report_dir/embeddings.npy` (float32, one row per record) and `report_dir/embeddings.json`
  (the embedder, the person whose name was taken out, and the record ids, in row order): a
  rerun embeds only ids not in them, so trying another threshold costs seconds, not a
  re-embedding.

Two prompts are duplicates when they share a `duplicate_group` (category and fact) and the
cosine distance of their normalised embeddings, the person's name taken out, is at most
`threshold`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from rich.progress import Progress

from minime.data.records import (
    CATEGORIES,
    SOURCES,
    PromptRecord,
    duplicate_group,
    read_records,
)
from minime.errors import ConfigError
from minime.fileio import atomic_open, write_text_atomic
from minime.generation import without_name
from minime.jsonl import write_jsonl
from minime.neardup import encode, min_similarity

REPORT_FILE = "dedup_report.json"
PLOT_FILE = "dedup_thresholds.png"
EMBEDDINGS_FILE = "embeddings.npy"
EMBEDDINGS_META_FILE = "embeddings.json"

#: Thresholds of the compression curve; neighbours are searched once, at the largest.
CURVE_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 + 0.025 * i, 3) for i in range(15))
LARGEST_CLUSTERS = 10

# Similarities computed per block of rows: rows x n float32 stays near 64 MB at any n.
_BLOCK_FLOATS = 16 * 1024 * 1024


class Counts(BaseModel):
    """Records before and after dedup."""

    before: int = Field(description="Records in the input.")
    after: int = Field(description="Records kept.")


class Cluster(BaseModel):
    """A group of prompts that dedup reduced to one."""

    size: int = Field(description="Number of records in the cluster.")
    ids: list[str] = Field(description="Record ids, the kept representative first.")
    prompts: list[str] = Field(description="Prompts, in the same order as `ids`.")


class CurvePoint(BaseModel):
    """What dedup would keep at one threshold."""

    threshold: float = Field(description="Cosine distance threshold.")
    kept: int = Field(description="Records that this threshold would keep.")
    compression_ratio: float = Field(description="Records before / records kept.")


class DedupReport(BaseModel):
    """What `dedup` did (saved as `dedup_report.json`)."""

    src: str = Field(description="The input JSONL.")
    dst: str = Field(description="The output JSONL of kept records.")
    embedder: str = Field(description="Model spec of the sentence encoder.")
    threshold: float = Field(description="Largest cosine distance at which prompts are merged.")
    total_before: int = Field(description="Records in the input.")
    total_after: int = Field(description="Records kept.")
    compression_ratio: float = Field(description="total_before / total_after (1.0 when empty).")
    by_category: dict[str, Counts] = Field(description="Counts per category present.")
    by_source: dict[str, Counts] = Field(description="Counts per source present.")
    largest_clusters: list[Cluster] = Field(
        description=f"The {LARGEST_CLUSTERS} largest clusters of two or more records."
    )
    curve: list[CurvePoint] = Field(
        description="Compression at each threshold from 0.05 to 0.40 (dedup_thresholds.png)."
    )
    embedded: int = Field(
        description="Records embedded in this run; the others were reused from embeddings.npy."
    )


def dedup(
    src: Path,
    dst: Path,
    report_dir: Path,
    *,
    embedder: str = "all-minilm-l6-v2",
    threshold: float = 0.15,
    person: str | None = None,
) -> DedupReport:
    """Keep one prompt per cluster of near-duplicates; write `dst` and the report files.

    Prompts of different categories, or about different facts, are never duplicates of
    each other (`duplicate_group`). A real prompt is kept over synthetic ones in its
    cluster; among equals, the most central one (the medoid of a cluster whose members are
    all within the threshold of each other).

    :param src: JSONL of PromptRecord dicts.
    :param dst: where the kept records go, unchanged and in input order.
    :param report_dir: folder for the report, the threshold plot and the embeddings cache.
    :param embedder: model spec of a sentence-transformers encoder.
    :param threshold: largest cosine distance (1 - cosine similarity) at which two prompts
        count as duplicates; 0 merges identical prompts only.
    :param person: the person's name, taken out of every prompt before it is embedded
        (`without_name`); None embeds the prompts as they are.
    :return: the report, also written to `report_dir/dedup_report.json`.
    :raises InputError: if `src` is missing, or a line is not a valid PromptRecord.
    :raises ConfigError: if `threshold` is outside [0, 1] or `embedder` is no sentence encoder.
    :raises ModelNotFoundError: if `embedder` names no model on this machine.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(
            f"dedup threshold {threshold}: must be between 0 and 1 (a cosine distance; "
            "0.15 is typical)"
        )
    raw, records = read_records(src)
    embeddings, embedded = _embeddings(records, report_dir, embedder, person)
    real = np.array([record.source == "real" for record in records], dtype=bool)

    neighbours = _find_neighbours(embeddings, max(threshold, *CURVE_THRESHOLDS), progress=True)
    groups = [duplicate_group(record.category, record.fact) for record in records]
    neighbours = _within_groups(neighbours, groups)
    labels = _cluster(neighbours, real, threshold)
    kept = labels == np.arange(len(records))
    write_jsonl(dst, (record for record, keep in zip(raw, kept, strict=True) if keep))

    # The curve reuses the pairs found above, at the largest threshold: no second search.
    curve = [_curve_point(t, neighbours, real) for t in CURVE_THRESHOLDS]
    report = DedupReport(
        src=str(src),
        dst=str(dst),
        embedder=embedder,
        threshold=threshold,
        total_before=len(records),
        total_after=int(kept.sum()),
        compression_ratio=_ratio(len(records), int(kept.sum())),
        by_category=_counts([r.category for r in records], kept, CATEGORIES),
        by_source=_counts([r.source for r in records], kept, SOURCES),
        largest_clusters=_largest_clusters(records, labels),
        curve=curve,
        embedded=embedded,
    )
    write_text_atomic(report_dir / REPORT_FILE, report.model_dump_json(indent=2) + "\n")
    _plot(report, report_dir / PLOT_FILE)
    return report


def _embeddings(
    records: list[PromptRecord], report_dir: Path, embedder: str, person: str | None
) -> tuple[np.ndarray, int]:
    """Normalised embeddings of every prompt (`person` taken out), and how many had to be
    computed.

    Rows cached in `report_dir` by the same embedder for the same person are reused by
    record id (an id is a hash of source and text, so the same id means the same prompt).
    """
    ids = [r.id for r in records]
    cache = _load_cache(report_dir, embedder, person)
    cached = dict(zip(*cache, strict=True)) if cache else {}
    missing = sorted({r.prompt for r in records if r.id not in cached})
    embedded = [without_name(text, person) for text in missing] if person else missing
    fresh = dict(zip(missing, encode(embedded, embedder), strict=True)) if missing else {}
    rows = [cached[r.id] if r.id in cached else fresh[r.prompt] for r in records]
    embeddings = np.stack(rows).astype(np.float32) if rows else np.empty((0, 0), np.float32)
    if cache is None or ids != cache[0]:
        _save_cache(report_dir, embedder, person, ids, embeddings)
    return embeddings, sum(r.id not in cached for r in records)


def _load_cache(
    report_dir: Path, embedder: str, person: str | None
) -> tuple[list[str], np.ndarray] | None:
    """The cached ids and embedding rows; None if missing, unreadable, or embedded by
    another embedder or for another person."""
    try:
        meta = json.loads((report_dir / EMBEDDINGS_META_FILE).read_text(encoding="utf-8"))
        array = np.load(report_dir / EMBEDDINGS_FILE, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("embedder") != embedder or meta.get("person") != person:
        return None
    ids = meta.get("ids")
    if not isinstance(ids, list) or array.ndim != 2 or len(ids) != len(array):
        return None
    return ids, array


def _save_cache(
    report_dir: Path, embedder: str, person: str | None, ids: list[str], embeddings: np.ndarray
) -> None:
    """Write embeddings.npy, then embeddings.json naming its rows.

    The .json goes first and last: removed before the array is replaced and written after,
    so a crash in between leaves no pair of files that disagree.
    """
    (report_dir / EMBEDDINGS_META_FILE).unlink(missing_ok=True)
    with atomic_open(report_dir / EMBEDDINGS_FILE, "wb") as handle:
        np.save(handle, embeddings, allow_pickle=False)
    write_text_atomic(
        report_dir / EMBEDDINGS_META_FILE,
        json.dumps({"embedder": embedder, "person": person, "ids": ids}) + "\n",
    )


@dataclass(frozen=True)
class _Neighbours:
    """Every pair of records (first < second) with similarity >= 1 - max_distance.

    Each pair is stored once, sorted by `first`; `by_second` lists the same pairs sorted by
    `second`. So a record's neighbours are two contiguous slices, at 16 bytes a pair (a
    third less than storing both directions, which matters at 0.40 on dense data).
    """

    n: int
    first: np.ndarray  # int32, ascending
    second: np.ndarray  # int32
    sims: np.ndarray  # float32
    by_second: np.ndarray  # int32 positions into the three arrays above, by `second`
    first_starts: np.ndarray  # int64, n + 1: pairs first_starts[i]:first_starts[i+1] have first i
    second_starts: np.ndarray  # int64, n + 1: by_second[second_starts[i]:...] have second i
    max_distance: float


def _find_neighbours(
    embeddings: np.ndarray, max_distance: float, progress: bool = False
) -> _Neighbours:
    """All pairs within `max_distance`, found exactly by blocks of rows.

    Why exact blocks and not approximate nearest neighbours (usearch, as SemHash uses): a
    block of rows against all embeddings is one BLAS call, and only the pairs under the
    threshold are kept, so memory is one block (about 64 MB) plus the pairs, never n x n.
    The n^2 * dim / 2 multiply-adds take under a second for the few thousand prompts a
    persona usually has and about 100 s for 100,000 on two busy cores. In exchange it finds
    every pair, with no top-k cap (a prompt repeated 500 times is one cluster), and is
    deterministic. An ANN index pays off at millions of prompts, far beyond what a
    one-person assistant is trained on.
    """
    n = len(embeddings)
    unit = _normalise(np.asarray(embeddings, dtype=np.float32))
    min_sim = min_similarity(max_distance)
    block = max(1, _BLOCK_FLOATS // max(n, 1))
    found: tuple[list[np.ndarray], ...] = ([], [], [])
    with Progress(transient=True, disable=not progress) as bar:
        # Progress counts similarities computed: later blocks have fewer columns.
        starts = range(0, n, block)
        work = [min(block, n - start) * (n - start) for start in starts]
        task = bar.add_task("finding near-duplicates", total=sum(work))
        for start, done in zip(starts, work, strict=True):
            for pieces, piece in zip(found, _upper_pairs(unit, start, block, min_sim), strict=True):
                pieces.append(piece)
            bar.advance(task, done)
    # Concatenated one at a time, each list emptied at once, to keep the peak low.
    columns = []
    for pieces, dtype in zip(found, (np.int32, np.int32, np.float32), strict=True):
        columns.append(np.concatenate(pieces) if pieces else np.empty(0, dtype))
        pieces.clear()
    first, second, sims = columns
    by_second = np.argsort(second, kind="stable").astype(np.int32)
    return _Neighbours(
        n=n,
        first=first,
        second=second,
        sims=sims,
        by_second=by_second,
        first_starts=_starts(first, n),
        second_starts=_starts(second, n),
        max_distance=max_distance,
    )


def _within_groups(neighbours: _Neighbours, groups: list[str]) -> _Neighbours:
    """`neighbours` less the pairs whose two records are in different groups."""
    ids = {group: i for i, group in enumerate(dict.fromkeys(groups))}
    group = np.array([ids[g] for g in groups], dtype=np.int32)
    same = group[neighbours.first] == group[neighbours.second]
    first, second = neighbours.first[same], neighbours.second[same]
    n = neighbours.n
    return _Neighbours(
        n=n,
        first=first,
        second=second,
        sims=neighbours.sims[same],
        by_second=np.argsort(second, kind="stable").astype(np.int32),
        first_starts=_starts(first, n),
        second_starts=_starts(second, n),
        max_distance=neighbours.max_distance,
    )


def _upper_pairs(
    unit: np.ndarray, start: int, block: int, min_sim: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (row, col, similarity), row in the block at `start`, col > row, sim >= min_sim."""
    # Only columns from `start` on: each unordered pair is computed once.
    sims = unit[start : start + block] @ unit[start:].T
    rows, cols = np.nonzero(sims >= min_sim)
    above_diagonal = cols > rows  # both offsets count from `start`
    rows, cols = rows[above_diagonal], cols[above_diagonal]
    return (
        (rows + start).astype(np.int32),
        (cols + start).astype(np.int32),
        sims[rows, cols].astype(np.float32),
    )


def _starts(sorted_ids: np.ndarray, n: int) -> np.ndarray:
    """Where each id's run begins in `sorted_ids` (n + 1 offsets)."""
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(sorted_ids, minlength=n), out=starts[1:])
    return starts


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def _cluster(neighbours: _Neighbours, real: np.ndarray, threshold: float) -> np.ndarray:
    """The index of each record's representative (its own index for a kept record).

    Greedy leader clustering, not single linkage. Connected components would chain
    A~B~C~D into one cluster and keep one prompt for questions far apart ("where does she
    work?" ~ "where does she live?" ~ "where did she grow up?"), silently losing training
    questions. Instead, records are visited in priority order (real before synthetic, then
    by centrality, then input order); one that no earlier representative lies within the
    threshold of becomes a representative and claims its unclaimed neighbours. So:
    - every dropped record is within the threshold of its representative, and no two kept
      records are (a chain A~B~C keeps B alone if B is central, else A and C);
    - a real prompt never joins a synthetic one: real records are visited first;
    - centrality is the summed similarity to the neighbours within the threshold, which for
      a cluster whose members are all within the threshold of each other is (size - 1)
      times the mean similarity to the rest: the medoid is kept.
    A dropped record then joins the most similar representative visited before it, so the
    report's clusters hold each record next to its closest kept prompt.

    :param real: one bool per record, True for source "real".
    """
    labels, rank, within = _leaders(neighbours, real, threshold)
    leaders = labels == np.arange(neighbours.n)
    # (dropped record, representative visited before it), in both orientations of a pair.
    first, second = neighbours.first, neighbours.second
    candidates = []
    for dropped, kept in ((first, second), (second, first)):
        pairs = np.flatnonzero(within & leaders[kept] & ~leaders[dropped])
        pairs = pairs[rank[kept[pairs]] < rank[dropped[pairs]]]
        candidates.append((dropped[pairs], kept[pairs], neighbours.sims[pairs]))
    dropped, kept, sims = (np.concatenate(column) for column in zip(*candidates, strict=True))
    best = np.lexsort((rank[kept], -sims, dropped))  # per record: most similar, then earliest
    dropped, kept = dropped[best], kept[best]
    first_of_record = np.ones(len(dropped), dtype=bool)
    first_of_record[1:] = dropped[1:] != dropped[:-1]
    labels[dropped[first_of_record]] = kept[first_of_record]
    return labels


def _leaders(
    neighbours: _Neighbours, real: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The greedy pass of `_cluster`: (claiming representative, visiting rank, pair mask).

    Only the representatives' labels are final; the pair mask marks the pairs within
    `threshold`.
    """
    nb, n = neighbours, neighbours.n
    if nb.max_distance < threshold:
        raise ValueError("neighbours were searched at a smaller distance than the threshold")
    within = nb.sims >= min_similarity(threshold)
    linked_sims = np.where(within, nb.sims, 0.0)
    centrality = np.bincount(nb.first, weights=linked_sims, minlength=n) + np.bincount(
        nb.second, weights=linked_sims, minlength=n
    )
    # Rounded so that float noise in the sums does not pick between copies of one prompt:
    # ties go to input order.
    centrality = np.round(centrality, 4)
    order = np.lexsort((np.arange(n), -centrality, ~np.asarray(real, dtype=bool)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    labels = np.full(n, -1, dtype=np.int64)
    for i in order.tolist():
        if labels[i] >= 0:
            continue
        labels[i] = i
        after = slice(nb.first_starts[i], nb.first_starts[i + 1])
        before = nb.by_second[nb.second_starts[i] : nb.second_starts[i + 1]]
        for linked in (nb.second[after][within[after]], nb.first[before][within[before]]):
            labels[linked[labels[linked] < 0]] = i
    return labels, rank, within


def _cluster_embeddings(embeddings: np.ndarray, real: np.ndarray, threshold: float) -> np.ndarray:
    """`_cluster` straight from an embedding matrix (one row per record)."""
    return _cluster(_find_neighbours(embeddings, threshold), np.asarray(real, bool), threshold)


def _ratio(before: int, after: int) -> float:
    return before / after if after else 1.0


def _curve_point(threshold: float, neighbours: _Neighbours, real: np.ndarray) -> CurvePoint:
    labels = _leaders(neighbours, real, threshold)[0]
    kept = int((labels == np.arange(neighbours.n)).sum())
    return CurvePoint(threshold=threshold, kept=kept, compression_ratio=_ratio(neighbours.n, kept))


def _counts(values: list[str], kept: np.ndarray, known: tuple[str, ...]) -> dict[str, Counts]:
    """Before/after counts per value present, in the order of `known`."""
    before = Counter(values)
    after = Counter(v for v, keep in zip(values, kept, strict=True) if keep)
    return {v: Counts(before=before[v], after=after[v]) for v in known if v in before}


def _largest_clusters(records: list[PromptRecord], labels: np.ndarray) -> list[Cluster]:
    sizes = np.bincount(labels, minlength=len(records)) if len(records) else np.zeros(0, int)
    leaders = [int(i) for i in np.lexsort((np.arange(len(sizes)), -sizes)) if sizes[i] > 1]
    clusters = []
    for leader in leaders[:LARGEST_CLUSTERS]:
        members = [leader] + [int(i) for i in np.flatnonzero(labels == leader) if i != leader]
        clusters.append(
            Cluster(
                size=len(members),
                ids=[records[i].id for i in members],
                prompts=[records[i].prompt for i in members],
            )
        )
    return clusters


def _plot(report: DedupReport, path: Path) -> None:
    """Compression ratio against threshold, the chosen one marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(
        [p.threshold for p in report.curve],
        [p.compression_ratio for p in report.curve],
        marker="o",
        markersize=4,
    )
    axes.axvline(report.threshold, color="tab:red", linestyle="--", linewidth=1)
    axes.plot([report.threshold], [report.compression_ratio], "o", color="tab:red")
    axes.annotate(
        f"threshold {report.threshold:g}: {report.compression_ratio:.2f}x "
        f"({report.total_after} of {report.total_before} kept)",
        (report.threshold, report.compression_ratio),
        xytext=(8, -14),
        textcoords="offset points",
        color="tab:red",
        fontsize=9,
    )
    axes.set_xlabel("threshold (cosine distance)")
    axes.set_ylabel("compression ratio (before / after)")
    axes.set_title(f"minime dedup: {report.total_before} prompts, {report.embedder}", fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
