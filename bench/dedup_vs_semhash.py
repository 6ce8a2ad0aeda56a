"""minime's dedup clustering against SemHash's self-deduplication, same encoder, same vectors.

Builds synthetic visitor prompts offline (templates x names x topics, plus deliberate
near-duplicates: case, punctuation, fillers), embeds them once with the bundled
all-MiniLM-L6-v2, then clusters the same embeddings with:

- minime: exact blocked neighbour search + greedy leader clustering (`minime.data.dedup`),
  once at the threshold alone and once with the pairs up to 0.40 and the 15-point curve
  that `dedup` also computes;
- SemHash: `SemHash.from_embeddings(...).self_deduplicate()` (usearch ANN index), its
  threshold being a similarity: 1 - distance.

Prints time, peak memory (Python/numpy allocations via tracemalloc, and the process's RSS
growth sampled every 5 ms), kept counts, and how many pairs of prompts the two methods
disagree on (same cluster in one, different clusters in the other), counted from cluster
sizes, without an n x n matrix.

    .venv/bin/python bench/dedup_vs_semhash.py [--n 12000] [--threshold 0.15] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

TEMPLATES = [
    "Where does {name} work on {topic}?",
    "What does {name} think about {topic}?",
    "Has {name} ever worked with {topic}?",
    "Can {name} help me with {topic}?",
    "How long has {name} been doing {topic}?",
    "Does {name} give talks about {topic}?",
    "What is {name}'s experience with {topic}?",
    "Would {name} recommend {topic} to a beginner?",
    "Why did {name} get into {topic}?",
    "Is {name} available for consulting on {topic}?",
    "What project of {name}'s used {topic}?",
    "Who taught {name} about {topic}?",
    "What book would {name} suggest on {topic}?",
    "How does {name} stay current with {topic}?",
    "What mistakes has {name} made with {topic}?",
    "Does {name} write blog posts on {topic}?",
    "When did {name} first try {topic}?",
    "What tools does {name} use for {topic}?",
    "Could {name} mentor someone in {topic}?",
    "What's {name}'s favourite thing about {topic}?",
    "Does {name} teach {topic} anywhere?",
    "How would {name} explain {topic} to a child?",
    "What does {name} dislike about {topic}?",
    "Is {topic} part of {name}'s day job?",
    "Tell me about {name} and {topic}.",
    "What certifications does {name} hold in {topic}?",
    "Which conference did {name} attend for {topic}?",
    "How much does {name} charge for {topic} work?",
    "What was {name}'s hardest problem in {topic}?",
    "Does {name} contribute to open source in {topic}?",
]
NAMES = [
    "Mara", "Jonas", "Aiko", "Priya", "Tomasz", "Lena", "Kwame", "Sofia", "Diego", "Hana",
    "Omar", "Freya", "Mateo", "Yuki", "Amara", "Lars", "Nadia", "Ravi", "Elif", "Bruno",
    "Chloe", "Ines", "Kofi", "Mila", "Sven",
]  # fmt: skip
TOPICS = [
    "Rust", "machine learning", "climate data", "urban gardening", "typography", "Kubernetes",
    "bird photography", "sourdough baking", "accessibility", "compilers", "bike repair",
    "jazz piano", "open data", "security audits", "3D printing", "carbon accounting",
    "technical writing", "sailing", "GraphQL", "home automation",
]  # fmt: skip
PREFIXES = ["Hey, ", "Quick question: ", "Hi! ", "Sorry to bother you, but ", "Out of curiosity, "]
SWAPS = [
    ("What is", "What's"),
    ("Can ", "Could "),
    ("Does ", "Do you know if "),
    ("Has ", "Do you know if "),
    ("Tell me about", "Tell me more about"),
]
SUFFIXES = [" Thanks!", " please", " :)", " I'm curious.", " Just wondering."]


def near_duplicate(text: str, rng: random.Random) -> str:
    """A paraphrase-level variant: case, punctuation, a filler, a contraction."""
    kind = rng.randrange(5)
    if kind == 0:
        return re.sub(r"[?.!]", "", text).lower()
    if kind == 1:
        return rng.choice(PREFIXES) + text[0].lower() + text[1:]
    if kind == 2:
        return text + rng.choice(SUFFIXES)
    if kind == 3:
        for old, new in SWAPS:
            if old in text:
                return text.replace(old, new, 1)
        return "Q: " + text
    return text.replace("?", "??").replace(" ", "  ", 1)


def build_prompts(n: int, seed: int) -> list[str]:
    """About 80% distinct template prompts, 20% near-duplicates of them; no exact copies."""
    rng = random.Random(seed)
    combos = [(t, name, topic) for t in TEMPLATES for name in NAMES for topic in TOPICS]
    rng.shuffle(combos)
    base = [t.format(name=name, topic=topic) for t, name, topic in combos[: int(n * 0.8)]]
    seen, prompts = set(base), list(base)
    while len(prompts) < n:
        variant = near_duplicate(rng.choice(base), rng)
        if variant not in seen:
            seen.add(variant)
            prompts.append(variant)
    rng.shuffle(prompts)
    return prompts


def measure(run: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """Result, seconds, tracemalloc peak MB and sampled RSS growth MB of `run()`.

    Timed without tracemalloc (it slows Python loops), then run again under it.
    """
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = [baseline]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], process.memory_info().rss)

    tracemalloc.start()
    run()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, traced / 2**20, (peak[0] - baseline) / 2**20


def pairs_together(labels: np.ndarray) -> int:
    """Pairs of records that share a cluster."""
    sizes = np.unique(labels, return_counts=True)[1].astype(np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def disagreeing_pairs(a: np.ndarray, b: np.ndarray) -> int:
    """Pairs of records in one cluster under one labelling and in two under the other.

    together(a) + together(b) - 2 * together(both): a pair together in both is counted in
    each of the first two terms; one together in exactly one is counted once.
    """
    both = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)[1].ravel()
    return pairs_together(a) + pairs_together(b) - 2 * pairs_together(both)


def input_order_labels(neighbours: Any, threshold: float) -> np.ndarray:
    """SemHash's selection rule on minime's exact pairs: visit records in input order; each
    joins its most similar earlier kept record within the threshold, or is kept.

    Tells apart what the visiting order changes from what approximate search changes.
    """
    n, cut = neighbours.n, 1 - threshold - 1e-6
    pairs = neighbours.sims >= cut
    # first < second, so `second` is the later record and `first` a candidate for it.
    later, earlier = neighbours.second[pairs], neighbours.first[pairs]
    sims = neighbours.sims[pairs]
    order = np.lexsort((earlier, -sims, later))
    later, earlier = later[order], earlier[order]
    starts = np.searchsorted(later, np.arange(n + 1))
    labels = np.arange(n)
    for i in range(n):
        candidates = earlier[starts[i] : starts[i + 1]]  # most similar first
        kept = candidates[labels[candidates] == candidates]
        if len(kept):
            labels[i] = kept[0]
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12_000, help="number of prompts")
    parser.add_argument("--threshold", type=float, default=0.15, help="cosine distance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", help="an .npz file that keeps the embeddings between runs")
    args = parser.parse_args()

    from semhash import SemHash
    from sentence_transformers import SentenceTransformer

    from minime.data.dedup import CURVE_THRESHOLDS, _cluster, _curve_point, _find_neighbours
    from minime.registry import resolve

    prompts = build_prompts(args.n, args.seed)
    index = {text: i for i, text in enumerate(prompts)}
    model = SentenceTransformer(
        str(resolve("all-minilm-l6-v2").path), device="cpu", local_files_only=True
    )
    cache = Path(args.cache) if args.cache else None
    key = hashlib.sha1("\n".join(prompts).encode()).hexdigest()
    saved = np.load(cache) if cache and cache.exists() else None
    if saved is not None and str(saved["key"]) == key:
        embeddings, embedded = saved["embeddings"], f"embeddings loaded from {cache}"
    else:
        start = time.perf_counter()
        embeddings = model.encode(
            prompts, batch_size=64, normalize_embeddings=True, show_progress_bar=False
        ).astype(np.float32)
        seconds = time.perf_counter() - start
        embedded = f"embedded once in {seconds:.1f} s ({len(prompts) / seconds:.0f}/s)"
        if cache:
            with cache.open("wb") as handle:
                np.savez(handle, embeddings=embeddings, key=key)
    print(
        f"{len(prompts)} prompts, {embedded}, dim {embeddings.shape[1]}, "
        f"threshold {args.threshold} (SemHash similarity {1 - args.threshold:.2f})\n"
    )
    # minime treats every record alike here (no real/synthetic split), as SemHash does.
    real = np.zeros(len(prompts), dtype=bool)

    def run_minime() -> np.ndarray:
        neighbours = _find_neighbours(embeddings, args.threshold)
        return _cluster(neighbours, real, args.threshold)

    def run_minime_with_curve() -> tuple[np.ndarray, int]:
        neighbours = _find_neighbours(embeddings, max(args.threshold, *CURVE_THRESHOLDS))
        labels = _cluster(neighbours, real, args.threshold)
        for t in CURVE_THRESHOLDS:
            _curve_point(t, neighbours, real)
        return labels, len(neighbours.first)

    def run_semhash() -> np.ndarray:
        semhash = SemHash.from_embeddings(embeddings, records=prompts, model=model)
        result = semhash.self_deduplicate(threshold=1 - args.threshold)
        labels = np.arange(len(prompts))
        for duplicate in result.filtered:
            labels[index[duplicate.record]] = index[duplicate.duplicate_of]
        return labels

    def run_input_order() -> np.ndarray:
        return input_order_labels(_find_neighbours(embeddings, args.threshold), args.threshold)

    minime_labels, *minime_cost = measure(run_minime)
    input_order, *input_order_cost = measure(run_input_order)
    (_, curve_pairs), *curve_cost = measure(run_minime_with_curve)
    semhash_labels, *semhash_cost = measure(run_semhash)

    rows = [
        ("minime (t only)", minime_cost, minime_labels),
        ("minime + curve to 0.40", curve_cost, minime_labels),
        ("SemHash (usearch)", semhash_cost, semhash_labels),
        ("SemHash rule, exact pairs", input_order_cost, input_order),
    ]
    print(f"{'method':<24}{'time s':>8}{'traced MB':>11}{'RSS +MB':>9}{'kept':>7}{'ratio':>7}")
    for name, (seconds, traced, rss), labels in rows:
        kept = int((labels == np.arange(len(labels))).sum())
        print(
            f"{name:<24}{seconds:>8.2f}{traced:>11.1f}{rss:>9.1f}{kept:>7}"
            f"{len(labels) / kept:>7.2f}"
        )
    together = (pairs_together(minime_labels), pairs_together(semhash_labels))
    disagree = disagreeing_pairs(minime_labels, semhash_labels)
    print(
        f"\npairs in one cluster: minime {together[0]}, SemHash {together[1]}; "
        f"disagreeing pairs: {disagree} "
        f"({disagree / max(1, len(prompts) * (len(prompts) - 1) // 2):.2e} of all pairs)"
    )
    print(
        "SemHash's rule on exact pairs (input order) vs SemHash: "
        f"{disagreeing_pairs(input_order, semhash_labels)} disagreeing pairs; "
        f"vs minime: {disagreeing_pairs(input_order, minime_labels)}"
    )
    print(f"pairs within distance 0.40 kept for the curve: {curve_pairs}")


if __name__ == "__main__":
    main()
