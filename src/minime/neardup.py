"""The near-duplicate rule, one for every stage: two texts are near duplicates when the
cosine distance of their normalised sentence embeddings is at most the threshold
(`data.dedup_threshold`). A distance equal to the threshold counts as a duplicate: dedup's
rule, which data's dedup, cover's top-up and eval's novelty filter all apply.
"""

from __future__ import annotations

import numpy as np

from minime.errors import ConfigError
from minime.progress import is_terminal
from minime.registry import resolve

# float32 dot products of unit vectors are off by about 1e-7, so a pair that sits exactly
# at the threshold (or two copies of one prompt at threshold 0) would otherwise land on
# either side of it by rounding.
TOLERANCE = 1e-6


def min_similarity(threshold: float) -> float:
    """The lowest cosine similarity at which two texts are near duplicates."""
    return 1.0 - threshold - TOLERANCE


def is_near(similarity: float, threshold: float) -> bool:
    """Whether two texts of this cosine similarity are near duplicates."""
    return similarity >= min_similarity(threshold)


def encode(texts: list[str], embedder: str) -> np.ndarray:
    """Embed `texts` with a local sentence-transformers model, normalised, with a progress
    bar on a terminal (piped, its redrawn bar would fill the log)."""
    model = resolve(embedder)
    if model.kind != "sentence-transformers":
        raise ConfigError(
            f"{embedder}: a {model.kind} model; dedup needs a sentence-transformers encoder "
            "such as all-minilm-l6-v2"
        )
    # Imported here: sentence-transformers loads torch and transformers.
    from sentence_transformers import SentenceTransformer

    # local_files_only: a folder that lacks a file must fail here, never start a download.
    encoder = SentenceTransformer(str(model.path), device="cpu", local_files_only=True)
    vectors = encoder.encode(
        texts, batch_size=64, show_progress_bar=is_terminal(), normalize_embeddings=True
    )
    return np.asarray(vectors, dtype=np.float32)
