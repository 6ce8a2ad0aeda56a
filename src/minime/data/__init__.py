"""`minime data`: turn a persona project into the training set the student is distilled from.

Steps, each a function from files to files under `out/data/`, resumable, run in order:
collect -> augment -> edge -> dedup -> respond -> cover -> split, then `report.md`.
"""

from __future__ import annotations

import json
from pathlib import Path

from minime import layout
from minime.backends import LazyBackend
from minime.errors import InputError
from minime.fileio import write_text_atomic
from minime.jsonl import load_jsonl, write_jsonl
from minime.project import Project

STEPS = ("collect", "augment", "edge", "dedup", "respond", "cover", "split")

FILES = {
    "collect": "collected.jsonl",
    "augment": "augmented.jsonl",
    "edge": "edge.jsonl",
    "prompts": "prompts.jsonl",
    "dedup": "deduped.jsonl",
    "respond": "responses.jsonl",
    "cover": "covered.jsonl",
    "train": layout.TRAIN,
    "val": layout.VAL,
}


class _Models:
    """One lazily loaded backend per model spec: a teacher that is also a generator loads once."""

    def __init__(self, project: Project) -> None:
        self._chat = project.config.chat
        self._backends: dict[str, LazyBackend] = {}

    def get(self, spec: str) -> LazyBackend:
        if spec not in self._backends:
            self._backends[spec] = LazyBackend(
                spec, n_ctx=self._chat.n_ctx, n_threads=self._chat.n_threads
            )
        return self._backends[spec]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()


def build_dataset(project: Project, steps: tuple[str, ...] = STEPS) -> dict:
    """Run the given steps (default: all) and write `out/data/report.md`; return the summary.

    :raises InputError: if a step's input from an earlier step is missing.
    """
    from minime.data.augment import augment
    from minime.data.collect import collect
    from minime.data.cover import cover
    from minime.data.dedup import dedup
    from minime.data.edge import edge_cases
    from minime.data.respond import respond
    from minime.data.split import split

    out = project.out_dir("data")
    path = {key: out / name for key, name in FILES.items()}
    config, models_config = project.config.data, project.config.models
    summary = _read_summary(out / "summary.json", steps)
    models = _Models(project)
    try:
        for step in steps:
            _require_inputs(step, path)
            if step == "collect":
                report = collect(project, path["collect"])
            elif step == "augment":
                generators = [models.get(spec) for spec in models_config.generators]
                report = augment(project, path["collect"], path["augment"], generators, config)
            elif step == "edge":
                generators = [models.get(spec) for spec in models_config.generators]
                report = edge_cases(project, path["edge"], generators, config)
            elif step == "dedup":
                _merge_prompts(path)
                report = dedup(
                    path["prompts"],
                    path["dedup"],
                    out,
                    embedder=models_config.embedder,
                    threshold=config.dedup_threshold,
                )
            elif step == "respond":
                teacher = models.get(models_config.teacher)
                report = respond(
                    project,
                    path["dedup"],
                    path["respond"],
                    teacher,
                    config,
                    judge=teacher,
                    embedder=models_config.embedder,
                )
            elif step == "cover":
                generators = [models.get(spec) for spec in models_config.generators]
                teacher = models.get(models_config.teacher)
                report = cover(
                    project,
                    path["respond"],
                    path["cover"],
                    generators,
                    teacher,
                    models_config.embedder,
                    config,
                    judge=teacher if config.judge else None,
                )
            else:
                report = split(
                    path["cover"],
                    path["train"],
                    path["val"],
                    config.val_fraction,
                    config.seed,
                    config.followups,
                )
            summary[step] = json.loads(report.model_dump_json())
    finally:
        models.close()
    write_text_atomic(out / "config.json", project.config.model_dump_json(indent=2))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    from minime.data.report import write_report

    write_report(project, out, summary)
    return summary


def _require_inputs(step: str, path: dict[str, Path]) -> None:
    needs = {
        "augment": ["collect"],
        "dedup": ["collect", "augment", "edge"],
        "respond": ["dedup"],
        "cover": ["respond"],
        "split": ["cover"],
    }.get(step, [])
    for key in needs:
        if not path[key].exists():
            raise InputError(
                f"{path[key]}: missing; run `minime data {key}` first (or `minime data DIR`)"
            )


def _merge_prompts(path: dict[str, Path]) -> None:
    """All prompts in one file for dedup (ids include the source, so none collide)."""
    write_jsonl(
        path["prompts"],
        (row for key in ("collect", "augment", "edge") for row in load_jsonl(path[key])),
    )


def _read_summary(path: Path, steps: tuple[str, ...]) -> dict:
    """Summaries of earlier runs, less those of the steps about to run and the ones after."""
    try:
        summary = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        summary = {}
    first = STEPS.index(steps[0]) if steps else len(STEPS)
    return {step: summary[step] for step in STEPS[:first] if step in summary}


__all__ = ["STEPS", "build_dataset"]
