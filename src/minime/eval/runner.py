"""`minime eval DIR`: every contender answers every question; score, measure, report.

Each contender runs in a process of its own (`minime.eval.worker`), one after another, so
its peak memory and speed are its own. Its answers and measurements are kept in
`out/eval/runs/`, keyed by the model's files, the questions and the sampling settings: a
rerun (to add a contender or a judge) asks no model twice.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from minime.backends import LazyBackend
from minime.errors import BackendError
from minime.eval.contenders import Contender, default_contenders
from minime.eval.generate import question_set
from minime.eval.judge import judge_answers
from minime.eval.questions import CATEGORIES, EvalQuestion, QuestionSet
from minime.eval.report import write_report
from minime.eval.scoring import Scorer
from minime.fileio import write_text_atomic
from minime.project import Project
from minime.tasks import task_key

#: Lines of a failed worker's stderr quoted in the error.
ERROR_TAIL_LINES = 5


class Answer(BaseModel):
    """One contender's answer to one question, its verdict and its timings."""

    question_id: str
    category: str
    source: str
    question: str
    answer: str
    passed: bool
    reasons: list[str]
    notes: list[str]
    judge_passed: bool | None = None
    judge_reason: str | None = None
    first_token_seconds: float
    tokens: int
    seconds: float


class CategoryScore(BaseModel):
    """Passed answers out of the category's questions."""

    passed: int
    total: int

    @property
    def share(self) -> float:
        """passed / total."""
        return self.passed / self.total if self.total else 0.0


class ContenderResult(BaseModel):
    """How one contender did."""

    label: str
    spec: str
    mode: str
    kind: str
    group: str
    quant: str | None
    size_bytes: int | None
    peak_rss_bytes: int | None
    load_seconds: float
    first_token_seconds: float
    tokens_per_second: float
    score: float
    per_category: dict[str, CategoryScore]
    judge_agreement: float | None = None
    answers: list[Answer]


class EvalReport(BaseModel):
    """What `minime eval` measured."""

    project: str
    questions: int
    persona_questions: int
    generated_questions: int
    rejected_questions: list[dict]
    persona_near_training: list[str]
    training_prompts: int
    max_tokens: int
    judge: str | None
    judge_agreement: float | None
    contenders: list[ContenderResult]


def evaluate(
    project: Project,
    contenders: list[Contender] | None = None,
    *,
    judge: str | None = None,
    out: Path | None = None,
    rerun: bool = False,
) -> EvalReport:
    """Run every contender on the project's questions; write report.md, report.html,
    report.json and the plots to `out` (default `out/eval/`).

    :param contenders: default: the baseline, every export and every trained student.
    :param judge: an LLM judge's model spec (default `eval.judge`; None: none).
    :param rerun: answer again even when answers for the same inputs are kept.
    :raises InputError: if the question file is malformed or there are no questions.
    :raises BackendError: if a contender fails to load or run.
    """
    config = project.config
    # Questions and answers are kept in out/eval/ whatever `out` is, so a candidates run
    # reuses them (the baseline's answers, for one).
    work = project.out_dir("eval")
    out = out or work
    out.mkdir(parents=True, exist_ok=True)
    contenders = contenders or default_contenders(project)
    generator = None
    if config.eval.generated_facts or config.eval.generated_per_category:
        generator = LazyBackend(
            config.eval.generator or config.models.generators[0],
            n_ctx=config.chat.n_ctx,
            n_threads=config.chat.n_threads,
        )
    try:
        questions = question_set(project, generator, work)
    finally:
        if generator is not None:
            generator.close()
    scorer = Scorer(project)
    results = [
        _score(contender, _run(project, contender, questions, work, rerun), questions, scorer)
        for contender in contenders
    ]
    judge = judge or config.eval.judge
    agreement = None
    if judge:
        agreement = judge_answers(project, judge, results, work)
    report = EvalReport(
        project=project.name,
        questions=len(questions.questions),
        persona_questions=sum(q.source == "persona" for q in questions.questions),
        generated_questions=sum(q.source == "generated" for q in questions.questions),
        rejected_questions=[r.model_dump() for r in questions.rejected],
        persona_near_training=questions.persona_near_training,
        training_prompts=questions.training_prompts,
        max_tokens=config.eval.max_tokens,
        judge=judge,
        judge_agreement=agreement,
        contenders=results,
    )
    write_report(report, out)
    return report


def _run(
    project: Project, contender: Contender, questions: QuestionSet, out: Path, rerun: bool
) -> dict:
    """The worker's result for `contender`: kept from an earlier run, else run now."""
    chat = project.config.chat
    params = {"temperature": 0.0, "max_tokens": project.config.eval.max_tokens, "seed": chat.seed}
    key = task_key(
        contender.fingerprint(project), questions.digest(), params, chat.n_ctx, chat.n_threads
    )
    runs = out / "runs"
    runs.mkdir(exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in contender.label)[:60]
    result_path = runs / f"{stem}-{key}.json"
    if result_path.exists() and not rerun:
        return json.loads(result_path.read_text(encoding="utf-8"))
    job = {
        "spec": contender.spec,
        "mode": contender.mode,
        "project": str(project.root.resolve()),
        "questions": [q.messages() for q in questions.questions],
        "params": params,
        "n_ctx": chat.n_ctx,
        "n_threads": chat.n_threads,
    }
    job_path = runs / f"{stem}-{key}.job.json"
    log_path = runs / f"{stem}-{key}.log"
    write_text_atomic(job_path, json.dumps(job))
    command = [sys.executable, "-m", "minime.eval.worker", str(job_path), str(result_path)]
    with (
        log_path.open("w", encoding="utf-8") as log,
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True) as worker,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        ) as progress,
    ):
        bar = progress.add_task(contender.label, total=len(job["questions"]))
        for _ in worker.stdout:
            progress.advance(bar)
        code = worker.wait()
    if code != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8").strip().splitlines()[-ERROR_TAIL_LINES:]
        raise BackendError(
            f"{contender.label} ({contender.spec}): the evaluation worker failed "
            f"(exit {code}): {' | '.join(tail) or 'no output'}; log: {log_path}"
        )
    job_path.unlink()
    log_path.unlink()
    return json.loads(result_path.read_text(encoding="utf-8"))


def _score(
    contender: Contender, run: dict, questions: QuestionSet, scorer: Scorer
) -> ContenderResult:
    answers = [
        _scored(question, item, scorer)
        for question, item in zip(questions.questions, run["answers"], strict=True)
    ]
    per_category = {
        category: CategoryScore(
            passed=sum(a.passed for a in answers if a.category == category),
            total=sum(a.category == category for a in answers),
        )
        for category in CATEGORIES
        if any(a.category == category for a in answers)
    }
    decoded = [i for i in run["answers"] if i["tokens"] > 1 and i["decode_seconds"] > 0]
    decode_tokens = sum(i["tokens"] - 1 for i in decoded)
    decode_seconds = sum(i["decode_seconds"] for i in decoded)
    first_tokens = [i["first_token_seconds"] for i in run["answers"] if i["text"]]
    kind = contender.kind
    return ContenderResult(
        label=contender.label,
        spec=contender.spec,
        mode=contender.mode,
        kind=kind,
        group=contender.group,
        quant=contender.quant,
        size_bytes=contender.size_bytes(),
        # A server's memory is not on this machine.
        peak_rss_bytes=run["peak_rss_bytes"] if kind != "openai" else None,
        load_seconds=round(run["load_seconds"], 3),
        first_token_seconds=round(statistics.median(first_tokens), 3) if first_tokens else 0.0,
        tokens_per_second=round(decode_tokens / decode_seconds, 1) if decode_seconds else 0.0,
        score=round(sum(a.passed for a in answers) / len(answers), 4),
        per_category=per_category,
        answers=answers,
    )


def _scored(question: EvalQuestion, item: dict, scorer: Scorer) -> Answer:
    verdict = scorer.score(question, item["text"])
    reasons = list(verdict.reasons)
    if item.get("error"):
        reasons.insert(0, f"error: {item['error']}")
    return Answer(
        question_id=question.id,
        category=question.category,
        source=question.source,
        question=question.question,
        answer=item["text"],
        passed=verdict.passed and not item.get("error"),
        reasons=reasons,
        notes=list(verdict.notes),
        first_token_seconds=round(item["first_token_seconds"], 3),
        tokens=item["tokens"],
        seconds=round(item["seconds"], 3),
    )
