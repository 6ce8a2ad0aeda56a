"""`minime eval DIR --candidates ...`: which base model makes the best student?

Each candidate student is trained and exported in a project of its own under
`out/eval/candidates/<student>/` that shares the persona's files and training set
(`out/data` is a link to the persona's), through `minime build`'s stages, so a rerun
skips the candidates already done. It sits above the stages (it runs build, export and
eval), so no stage package imports it. Then each candidate's default quantization and the
profile-prompted baseline answer the same questions; the report goes to
`out/eval/candidates/`.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from minime.build import build
from minime.config import CONFIG_FILE
from minime.eval import Contender, EvalReport, evaluate
from minime.eval.contenders import baseline, recommended_quant
from minime.fileio import write_text_atomic
from minime.layout import data_dir, export_dir, exported_ggufs, slug
from minime.project import Project


def compare_candidates(
    project: Project, students: list[str] | None = None, *, judge: str | None = None
) -> EvalReport:
    """Distill, export and evaluate each student (default `eval.candidates`).

    :raises MinimeError: whatever a stage raises for a candidate.
    """
    root = project.out_dir("eval") / "candidates"
    contenders = [baseline(project)]
    for student in students or project.config.eval.candidates:
        candidate = candidate_project(
            project, student, root / slug(Path(student).name if os.sep in student else student)
        )
        build(candidate, ("distill", "export"))
        folder = export_dir(candidate.root)
        quant = recommended_quant(folder)
        path = exported_ggufs(folder)[quant]
        contenders.append(Contender(student, str(path), "plain", "candidate", quant))
    return evaluate(project, contenders, judge=judge, out=root)


def candidate_project(project: Project, student: str, folder: Path) -> Project:
    """A project in `folder` like `project` but with `student` as its student; its
    `out/data` is a link to the persona's training set."""
    settings = project.config.model_dump(mode="json")
    settings["name"] = project.name
    settings["profile"] = str((project.root / project.config.profile).resolve())
    settings["prompts"] = [str(path.resolve()) for path in project.prompt_files]
    settings["models"]["student"] = student
    settings["eval"]["questions"] = str(project.questions_path.resolve())
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / CONFIG_FILE, yaml.safe_dump(settings, sort_keys=False))
    data = data_dir(folder)
    data.parent.mkdir(parents=True, exist_ok=True)
    target = data_dir(project.root).resolve()
    if data.is_symlink() and Path(os.readlink(data)) != target:
        data.unlink()
    if not data.is_symlink():
        data.symlink_to(target, target_is_directory=True)
    return Project.open(folder)
