"""`minime data`: turn a persona project into the training set the student is distilled from.

Steps, each a function from files to files under `out/data/`, resumable, run in order:
collect -> augment -> edge -> dedup -> respond -> cover -> rephrase -> split, then `report.md`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from minime import layout
from minime.backends import LazyBackend
from minime.config import DataConfig, ModelsConfig
from minime.data import augment, collect, cover, dedup, edge, rephrase, respond, split
from minime.data.report import write_report
from minime.errors import InputError
from minime.fileio import write_text_atomic
from minime.jsonl import load_jsonl, write_jsonl
from minime.project import Project

FILES = {
    "collect": "collected.jsonl",
    "augment": "augmented.jsonl",
    "edge": "edge.jsonl",
    "prompts": "prompts.jsonl",
    "dedup": "deduped.jsonl",
    "respond": "responses.jsonl",
    "cover": "covered.jsonl",
    "rephrase": "rephrased.jsonl",
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


@dataclass
class _Run:
    """What a step reads: the project, its settings, the files by key and the models."""

    project: Project
    out: Path
    path: dict[str, Path]
    models: _Models

    @property
    def config(self) -> DataConfig:
        return self.project.config.data

    @property
    def specs(self) -> ModelsConfig:
        return self.project.config.models

    def generators(self) -> list[LazyBackend]:
        return [self.models.get(spec) for spec in self.specs.generators]

    def teacher(self) -> LazyBackend:
        return self.models.get(self.specs.teacher)


def _collect(run: _Run) -> BaseModel:
    return collect.collect(run.project, run.path["collect"])


def _augment(run: _Run) -> BaseModel:
    return augment.augment(
        run.project, run.path["collect"], run.path["augment"], run.generators(), run.config
    )


def _edge(run: _Run) -> BaseModel:
    return edge.edge_cases(run.project, run.path["edge"], run.generators(), run.config)


def _dedup(run: _Run) -> BaseModel:
    _merge_prompts(run.path)
    return dedup.dedup(
        run.path["prompts"],
        run.path["dedup"],
        run.out,
        embedder=run.specs.embedder,
        threshold=run.config.dedup_threshold,
        person=run.project.name,
    )


def _respond(run: _Run) -> BaseModel:
    teacher = run.teacher()
    return respond.respond(
        run.project,
        run.path["dedup"],
        run.path["respond"],
        teacher,
        run.config,
        judge=teacher,
        embedder=run.specs.embedder,
    )


def _cover(run: _Run) -> BaseModel:
    generators, teacher = run.generators(), run.teacher()
    return cover.cover(
        run.project,
        run.path["respond"],
        run.path["cover"],
        generators,
        teacher,
        run.specs.embedder,
        run.config,
        judge=teacher if run.config.judge else None,
    )


def _rephrase(run: _Run) -> BaseModel:
    return rephrase.rephrase(
        run.project,
        run.path["cover"],
        run.path["rephrase"],
        run.generators(),
        run.specs.embedder,
        run.config,
    )


def _split(run: _Run) -> BaseModel:
    config = run.config
    return split.split(
        run.path["rephrase"],
        run.path["train"],
        run.path["val"],
        config.val_fraction,
        config.seed,
        config.followups,
    )


@dataclass(frozen=True)
class Step:
    """One data step: its name, the earlier steps' files it reads (keys of FILES), and the
    function that runs it and returns its report."""

    name: str
    needs: tuple[str, ...]
    run: Callable[[_Run], BaseModel]


DATA_STEPS: tuple[Step, ...] = (
    Step("collect", (), _collect),
    Step("augment", ("collect",), _augment),
    Step("edge", (), _edge),
    Step("dedup", ("collect", "augment", "edge"), _dedup),
    Step("respond", ("dedup",), _respond),
    Step("cover", ("respond",), _cover),
    Step("rephrase", ("cover",), _rephrase),
    Step("split", ("rephrase",), _split),
)
STEPS = tuple(step.name for step in DATA_STEPS)
_BY_NAME = {step.name: step for step in DATA_STEPS}


def build_dataset(project: Project, steps: tuple[str, ...] = STEPS) -> dict:
    """Run the given steps (default: all) and write `out/data/report.md`; return the summary.

    :raises InputError: if a step's input from an earlier step is missing.
    """
    out = project.out_dir("data")
    run = _Run(project, out, {key: out / name for key, name in FILES.items()}, _Models(project))
    summary = _read_summary(out / "summary.json", steps)
    try:
        for name in steps:
            step = _BY_NAME[name]
            _require_inputs(step, run.path)
            summary[name] = json.loads(step.run(run).model_dump_json())
    finally:
        run.models.close()
    write_text_atomic(out / "config.json", project.config.model_dump_json(indent=2))
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    write_report(project, out, summary)
    return summary


def _require_inputs(step: Step, path: dict[str, Path]) -> None:
    for key in step.needs:
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
