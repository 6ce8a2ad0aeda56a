"""The `minime` command: a thin layer that parses options and calls one stage function."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, TypeVar, get_args

import typer
from rich.console import Console
from rich.table import Table

from minime import layout
from minime.build import STAGES
from minime.config import Quantization
from minime.errors import MinimeError

app = typer.Typer(
    help="Turn what a person writes about themselves into a tiny chat assistant.\n\n"
    "Start with `minime init DIR`, write DIR/profile.md, then `minime build DIR` and "
    "`minime chat DIR`.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: rich's panels show a <bool> after every flag and keep the
    # docstrings' line breaks mid-sentence.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    # Logs and CI have no width; rich's 80 columns would fold the evaluation tables.
    console.width = 160
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

ProjectDir = Annotated[Path, typer.Argument(help="Persona project folder.", show_default=False)]


class Method(StrEnum):
    """A distillation method (`distill.method`)."""

    sft = "sft"
    kd = "kd"
    context = "context"


Quant = Enum("Quant", {q: q for q in get_args(Quantization)}, type=str)  # type: ignore[misc]
#: The stages of `minime build`, in order.
Stage = Enum("Stage", {s: s for s in STAGES}, type=str)  # type: ignore[misc]

MethodOption = Annotated[
    Method | None,
    typer.Option(
        help="Distill method other than distill.method, in out/distill-METHOD/ and "
        "out/export-METHOD/ (the same folders for distill, export and eval).",
        show_default=False,
    ),
]
#: `chat` and `serve`: the profile in the prompt.
ProfileOption = Annotated[
    bool,
    typer.Option("--profile", help="Put the profile in the prompt (of --model, else models.chat)."),
]


def _version(value: bool) -> None:
    if value:
        import importlib.metadata

        console.print(f"minime {importlib.metadata.version('minime')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = None,
) -> None:
    """Turn what a person writes about themselves into a tiny chat assistant."""
    if not err_console.is_terminal:
        # Piped, minime prints plain progress lines; the tqdm bars of transformers and the
        # hub ("Loading weights", "Writing model shards") would only fill the log.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _user_errors(command: F) -> F:
    """Show a MinimeError as one line and exit 1, Ctrl-C as one line and exit 130; any other
    exception is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MinimeError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(
                "\ninterrupted; finished work is kept, and the same command continues where "
                "it stopped",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _table(*headers: str, **options) -> Table:
    """A rich table; piped, a Markdown one (no box-drawing characters, easy to parse)."""
    if not console.is_terminal:
        from rich import box

        options.setdefault("box", box.MARKDOWN)
    return Table(*headers, **options)


def _warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _say(line: str) -> None:
    """One plain progress line (stderr, flushed)."""
    from minime.progress import say

    say(line)


def _open(directory: Path):
    from minime.project import Project

    return Project.open(directory)


def _with_overrides(project, **values):
    """The project with command-line overrides of settings (`section.field` keys, None:
    not given) on top of minime.yaml.

    :raises typer.BadParameter: if an override is out of range.
    """
    from pydantic import ValidationError

    from minime.config import MinimeConfig

    given = {key: value for key, value in values.items() if value is not None}
    if not given:
        return project
    data = project.config.model_dump()
    for key, value in given.items():
        section, name = key.split(".")
        data[section][name] = value
    try:
        config = MinimeConfig.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][-1]).replace("_", "-")
        raise typer.BadParameter(f"{flag}: {error['msg']}") from None
    return dataclasses.replace(project, config=config)


@app.command(short_help="Write a starter project: profile.md, minime.yaml, prompts.txt.")
@_user_errors
def init(
    directory: ProjectDir,
    name: Annotated[str, typer.Option(help="The person's name.")] = "Your Name",
) -> None:
    """Write a starter persona project (profile.md, minime.yaml, prompts.txt), leaving any
    existing file as it is, and print the next steps."""
    from minime.project import init_project

    written = init_project(directory, name)
    for path in written:
        console.print(f"wrote {path}", highlight=False)
    if not written:
        console.print(f"{directory} already has a project; nothing written", highlight=False)
    console.print(
        "\nNext:\n"
        f"  1. write {directory / 'profile.md'}: what visitors may ask about the person"
        + (" (and set the name in minime.yaml)" if name == "Your Name" else "")
        + "\n"
        f"  2. minime chat {directory} --profile     try a model that reads the profile (no "
        "training)\n"
        f"  3. minime build {directory}              build the data, train, export and "
        "evaluate the student (hours on a CPU)\n"
        f"  4. minime chat {directory}               talk to the trained student\n"
        f"  settings: minime config {directory}; the bundled models: minime models",
        highlight=False,
        markup=False,
    )


@app.command(short_help="Print every setting, its default and the value in force.")
@_user_errors
def config(
    directory: ProjectDir,
    changed: Annotated[
        bool, typer.Option("--changed", help="Only the settings minime.yaml changes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """Print every setting of minime.yaml: the value in force, its default, where it is set
    and what it does."""
    import json

    from rich.markup import escape

    from minime.settings import settings, show

    project = _open(directory)
    rows = [s for s in settings(project) if s.changed or not changed]
    if as_json:
        print(json.dumps([dataclasses.asdict(s) for s in rows], indent=2, default=str))
        return
    for setting in rows:
        where = f"minime.yaml:{setting.line}" if setting.line else "default"
        default = f"; default {show(setting.default)}" if setting.changed else ""
        console.print(
            f"[bold]{setting.key}[/]: {escape(show(setting.value))}  "
            f"[dim]({where}{escape(default)})[/]",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    {setting.description}", highlight=False, markup=False, soft_wrap=True)


@app.command(short_help="List the bundled models and whether they are installed.")
@_user_errors
def models(
    paths: Annotated[
        bool, typer.Option("--paths", help="Show where each model's file is.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, for scripts.")] = False,
) -> None:
    """List the bundled models and whether their weights are installed."""
    from minime.registry import model_statuses

    if as_json:
        import json

        found = [
            {
                "name": s.model.name,
                "kind": s.model.kind,
                "description": s.model.description,
                "path": str(s.path) if s.path else None,
                "problem": s.problem,
            }
            for s in model_statuses()
        ]
        print(json.dumps(found, indent=2))
        if any(s["path"] is None for s in found):
            raise typer.Exit(1)
        return
    table = _table("name", "kind", "description", "status" if not paths else "path")
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    statuses = model_statuses()
    for status in statuses:
        if status.path:
            state = f"[green]{status.path if paths else 'installed'}[/]"
        else:
            state = f"[red]{status.problem}[/]"
        kind = "encoder" if status.model.kind == "sentence-transformers" else status.model.kind
        table.add_row(status.model.name, kind, status.model.description, state)
    console.print(table)
    console.print(
        "Any .gguf path, Hugging Face model folder, or openai:MODEL@BASE_URL[#KEY_ENV] "
        "works wherever a model is named.",
        markup=False,
    )
    if any(status.path is None for status in statuses):
        raise typer.Exit(1)


@app.command(short_help="Talk to the trained student (or any model).")
@_user_errors
def chat(
    directory: ProjectDir,
    questions: Annotated[
        list[str] | None,
        typer.Argument(help="Questions to answer; none: interactive.", show_default=False),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Model spec or .gguf answering as it is (as a student does); default: the "
            "project's export.",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOption = False,
    quant: Annotated[
        Quant | None,
        typer.Option(
            help="Exported file to use; default: the export's default.", show_default=False
        ),
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="Longest answer, in tokens.", show_default=False)
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature.", show_default=False)
    ] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Print token counts and speed.")] = False,
) -> None:
    """Answer questions about the person: by default with the student trained and exported
    by `minime build` (the file `minime serve` serves); with --model, any model as it is;
    with --profile, a model that reads the profile in its prompt (no training needed). The
    first line says which model answers and how."""
    from minime.chat import choose_model, open_chat
    from minime.progress import waiting
    from minime.registry import check_reachable, resolve

    project = _open(directory)
    choice = choose_model(project, model, profile=profile, quant=quant and quant.value)
    if model is None and choice.mode != "distilled":
        project.resolve_models(["chat"])  # with its minime.yaml line
    check_reachable(resolve(choice.spec))  # a wrong spec or URL fails before any output
    console.print(f"[dim]answering: {choice.describe()}[/]", highlight=False, soft_wrap=True)
    for warning in choice.warnings:
        _warn(warning)
    with waiting(f"loading {choice.spec}"):
        assistant = open_chat(project, choice)
    updates = {"max_tokens": max_tokens, "temperature": temperature}
    assistant.params = assistant.params.model_copy(
        update={k: v for k, v in updates.items() if v is not None}
    )
    with assistant.backend:
        if assistant.system and assistant.caches_prompt:
            with waiting(
                f"reading the profile ({len(assistant.system):,} characters) into the model, "
                "once; the answers after it start faster"
            ):
                assistant.warm_up()
        if questions:
            for question in questions:
                console.print(f"[bold]Q:[/] {question}", highlight=False)
                _print_answer(assistant, question, [], stats)
        else:
            _interactive(assistant, stats)


def _print_answer(assistant, question: str, history: list, stats: bool) -> str:
    start = time.perf_counter()
    first = None
    parts = []
    usage = None
    console.print("[bold]A:[/] ", end="")
    for delta in assistant.stream(question, history):
        if delta.text:
            first = first or time.perf_counter()
            parts.append(delta.text)
            console.print(delta.text, end="", markup=False, highlight=False, soft_wrap=True)
        usage = delta.usage or usage
    console.print()
    if stats and usage:
        end = time.perf_counter()
        ttft = (first or end) - start
        speed = (usage.completion_tokens - 1) / (end - first) if first and end > first else 0.0
        console.print(
            f"[dim]{usage.prompt_tokens} prompt tokens ({usage.cached_tokens} cached), "
            f"{usage.completion_tokens} answer tokens, first token {ttft:.2f}s, "
            f"{speed:.1f} tokens/s[/]"
        )
    return "".join(parts)


def _interactive(assistant, stats: bool) -> None:
    console.print(
        f"Ask about {assistant.project.name}; an empty line or Ctrl-D ends.", highlight=False
    )
    history: list[dict[str, str]] = []
    while True:
        try:
            question = console.input("[bold]Q:[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not question:
            return
        answer = _print_answer(assistant, question, history, stats)
        history += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]


_DATA_STEP_ROLES = {
    "augment": ("generators",),
    "edge": ("generators",),
    "dedup": ("embedder",),
    "respond": ("teacher",),
    "cover": ("generators", "teacher", "embedder"),
    "rephrase": ("generators", "embedder"),
}


@app.command(
    short_help="Build the training set: [STEP] DIR.",
    help="Build the training set: [STEP] DIR, STEP one of collect, augment, edge, dedup, "
    "respond, cover, rephrase, split; without STEP every step runs in order. Steps resume "
    "where they stopped.",
)
@_user_errors
def data(
    args: Annotated[list[str], typer.Argument(metavar="[STEP] DIR", show_default=False)],
) -> None:
    """Build the training set (see --help)."""
    from minime.build import run_data_steps
    from minime.data import STEPS

    if len(args) == 2 and args[0] in STEPS:
        steps, directory = (args[0],), args[1]
    elif len(args) == 1:
        steps, directory = STEPS, args[0]
    else:
        raise typer.BadParameter(f"expected [STEP] DIR with STEP one of {', '.join(STEPS)}")
    project = _open(Path(directory))
    if any(step in _DATA_STEP_ROLES for step in steps):
        project.require_edited()
    roles = [role for step in steps for role in _DATA_STEP_ROLES.get(step, ())]
    project.resolve_models(dict.fromkeys(roles))
    try:  # not needed here; said now rather than after an hour of data
        project.resolve_models(["student"])
    except MinimeError as exc:
        _warn(f"{exc} (`minime distill` will need it)")
    summary = run_data_steps(project, steps, _say)
    out = project.out_dir("data")
    table = _table("step", "result", title=f"minime data: {project.name}")
    for step in steps:
        report = summary.get(step, {})
        shown = {k: v for k, v in report.items() if isinstance(v, int | float | str)}
        table.add_row(step, ", ".join(f"{k}={_num(v)}" for k, v in shown.items()))
    console.print(table)
    console.print(f"report: {out / 'report.md'}")


def _num(value):
    return f"{value:.3g}" if isinstance(value, float) else value


@app.command(short_help="Train the student on out/data/.")
@_user_errors
def distill(
    directory: ProjectDir,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")
    ] = False,
    method: MethodOption = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Override distill.learning_rate.", show_default=False)
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Override distill.max_minutes.", show_default=False)
    ] = None,
    student: Annotated[
        str | None, typer.Option(help="Override models.student.", show_default=False)
    ] = None,
) -> None:
    """Train the student on out/data/ (settings: `distill:` in minime.yaml; `minime config
    DIR` lists them)."""
    from minime.distill import distill as run_distill
    from minime.progress import piped_heartbeat

    project = _with_overrides(
        _open(directory),
        **{
            "distill.learning_rate": learning_rate,
            "distill.max_minutes": max_minutes,
            "models.student": student,
        },
    )
    project.resolve_models(["student"])
    chosen = method.value if method else None
    with piped_heartbeat("distill: training the student"):
        report = run_distill(project, resume=resume, method=chosen)
    if report is None:  # not the main process of a multi-GPU run
        return
    stage = layout.distill_stage(chosen, project.config.distill.method)
    out = project.out_dir(stage)
    table = _table("", "", title=f"minime distill: {project.name}", show_header=False)
    for key in (
        "student",
        "mode",
        "tuning",
        "steps",
        "seconds",
        "tokens_per_second",
        "final_train_loss",
        "best_val_loss",
        "fact_recall_train",
        "fact_recall_val",
        "persona_fact_accuracy",
    ):
        table.add_row(key, str(_num(getattr(report, key))))
    console.print(table)
    console.print(
        f"model: {layout.trained_model(project.root, stage)}\nreport: {out / 'report.md'}"
    )


@app.command(short_help="Write the trained student as verified GGUF files.")
@_user_errors
def export(
    directory: ProjectDir,
    verify_only: Annotated[
        bool, typer.Option("--verify", help="Only verify the files exported before.")
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Write the files without verifying them.")
    ] = False,
    method: MethodOption = None,
    source: Annotated[
        Path | None,
        typer.Option(
            help="Trained model folder; default: out/distill/model (out/distill-METHOD/model "
            "with --method).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the trained student as GGUF files (F16 and quantized), a Modelfile and a model
    card; verify that they tokenize, predict and stop like the trained model."""
    from minime.export import export as run_export
    from minime.export import verify
    from minime.progress import piped_heartbeat

    if verify_only and no_verify:
        raise typer.BadParameter(
            "--verify (only verify) and --no-verify (skip it) exclude each other"
        )
    if method and source:
        raise typer.BadParameter("give --method or --source, not both")
    project = _open(directory)
    if method:
        source = layout.trained_model(
            project.root, layout.distill_stage(method.value, project.config.distill.method)
        )
    if verify_only:
        with piped_heartbeat("export: verifying the exported files"):
            report = verify(project, source)
    else:
        with piped_heartbeat("export: writing" + ("" if no_verify else ", then verifying")):
            result = run_export(project, source, verify=not no_verify)
        report = result.verify
        table = _table("file", "size", title=f"minime export: {project.name}")
        for quant, path in result.files.items():
            default = " (default)" if quant == result.default else ""
            table.add_row(f"{path}{default}", f"{path.stat().st_size / 1e6:.1f} MB")
        console.print(table)
        if result.reused:
            console.print("source unchanged: kept the files written before")
    if report is not None:
        table = _table("file", "top-1", "KL", "ended turn", title="verified", show_header=True)
        for quant, figures in report.logits.items():
            answers = report.answers.get(quant)
            ended = f"{answers.stopped}/{answers.prompts}" if answers else "-"
            table.add_row(quant, f"{figures.top1_agreement:.3f}", f"{figures.mean_kl:.4f}", ended)
        console.print(table)
        console.print(
            f"tokenizer: {report.tokenizer.rows} training prompts identical; {report.seconds:.0f} s"
        )
        for warning in report.warnings:
            _warn(warning)


@app.command(name="eval", short_help="Score the students and the baseline on the questions.")
@_user_errors
def eval_(
    directory: ProjectDir,
    contenders: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models to compare: `baseline`, `profile:SPEC` (the profile-prompted "
            "assistant with any model) or a model spec answering with no profile (GGUF, "
            "Hugging Face folder, openai:MODEL@URL); LABEL=... names one in the report. "
            "Default: the baseline, every export and every trained student.",
            show_default=False,
        ),
    ] = None,
    method: MethodOption = None,
    judge: Annotated[
        str | None,
        typer.Option(help="Model spec of an LLM judge; default: eval.judge.", show_default=False),
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Train, export and compare these students (comma-separated model specs, or "
            "`default` for eval.candidates); slow: a full distill each.",
            show_default=False,
        ),
    ] = None,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Answer again even when kept answers match.")
    ] = False,
) -> None:
    """Score models on the persona's questions; write out/eval/report.md, .html, .json.
    With --method, the baseline and that method's student only."""
    from minime.candidates import compare_candidates
    from minime.eval import default_contenders, evaluate, parse_contender
    from minime.progress import piped_heartbeat

    project = _open(directory)
    given = [bool(contenders), bool(candidates), method is not None]
    if sum(given) > 1:
        raise typer.BadParameter("give contenders, --method or --candidates, not several")
    roles = ["chat", "embedder", "eval.generator", "eval.judge"]
    if judge is None:
        project.resolve_models(roles)
    else:
        from minime.registry import check_reachable, resolve

        project.resolve_models(roles[:-1])
        check_reachable(resolve(judge))
    if candidates:
        students = None if candidates == "default" else [c.strip() for c in candidates.split(",")]
        report = compare_candidates(project, students, judge=judge)
        folder = project.out_dir("eval") / "candidates"
    else:
        chosen = [parse_contender(c, project) for c in contenders or []]
        if method is not None:
            chosen = [
                c for c in default_contenders(project) if c.group in ("baseline", method.value)
            ]
            if len(chosen) < 2:
                raise MinimeError(
                    f"{layout.out_dir(project.root)}: no {method.value} student to evaluate; "
                    f"train one with `minime distill {directory} --method {method.value}`"
                )
        with piped_heartbeat("eval: answering and scoring"):
            report = evaluate(project, chosen or None, judge=judge, rerun=rerun)
        folder = project.out_dir("eval")
    _print_eval_summary(report)
    console.print(f"report: {folder / 'report.md'} (and report.html, report.json)")


#: Short headers for the terminal; report.md has the full ones.
_EVAL_HEADERS = {
    "chained": "chain",
    "private": "priv.",
    "out_of_scope": "scope",
    "injection": "inject.",
    "multilingual": "lang.",
    "unanswerable": "unans.",
    "generated": "new",
    "peak RSS MB": "RSS MB",
    "first token s": "1st tok s",
}


def _print_eval_summary(report) -> None:
    from minime.eval.report import COLUMNS, summary_rows

    headers = [_EVAL_HEADERS.get(c, c) for c in COLUMNS]
    table = _table(*headers, title=f"minime eval: {report.project} ({report.questions} questions)")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)


@app.command(short_help="Run data, distill, export and eval; skip what is up to date.")
@_user_errors
def build(
    directory: ProjectDir,
    force: Annotated[bool, typer.Option("--force", help="Run every stage again.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print which stages would run and why; run nothing."),
    ] = False,
    start: Annotated[
        Stage | None,
        typer.Option(
            "--from",
            help="First stage to consider.",
            show_default=False,
        ),
    ] = None,
    stop: Annotated[
        Stage | None,
        typer.Option("--to", help="Last stage to consider.", show_default=False),
    ] = None,
    record: Annotated[
        Stage | None,
        typer.Option(
            help="Only mark this stage's current outputs as up to date (after running it by "
            "hand), without running anything.",
            show_default=False,
        ),
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Override distill.learning_rate.", show_default=False)
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Override distill.max_minutes.", show_default=False)
    ] = None,
    student: Annotated[
        str | None, typer.Option(help="Override models.student.", show_default=False)
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what each stage did as JSON, for scripts.")
    ] = False,
) -> None:
    """Run data, distill, export and eval in order, skipping stages whose inputs have not
    changed since their last complete run; then write out/report.html and print the
    evaluation's summary."""
    import json

    from minime.build import build as run_build
    from minime.build import plan, record_stage, select_stages
    from minime.eval import EvalReport

    project = _with_overrides(
        _open(directory),
        **{
            "distill.learning_rate": learning_rate,
            "distill.max_minutes": max_minutes,
            "models.student": student,
        },
    )
    if record:
        record_stage(project, record.value)
        console.print(f"recorded {record.value} as up to date")
        return
    stages = select_stages(start and start.value, stop and stop.value)
    if dry_run:
        planned = plan(project, stages, force=force)
        if as_json:
            print(json.dumps([o.model_dump() for o in planned], indent=2))
            return
        table = _table("stage", "would", "why", title=f"build plan: {project.name}")
        for outcome in planned:
            table.add_row(outcome.stage, "run" if outcome.ran else "skip", outcome.why)
        console.print(table)
        problem = project.template_problem()
        if problem:
            _warn(problem)
        return
    project.require_edited()
    changed = project.config.model_dump(mode="json", exclude_defaults=True)
    if changed:
        from minime.settings import settings, show

        shown = ", ".join(f"{s.key}={show(s.value)}" for s in settings(project) if s.changed)
        _say(f"settings changed from the defaults: {shown}")
    outcomes = run_build(project, stages, force=force, say=_say)
    if as_json:
        page = _write_project_report(project)
        print(json.dumps({"stages": [o.model_dump() for o in outcomes], "report": str(page)}))
        return
    table = _table("stage", "", "seconds", title=f"minime build: {project.name}")
    for outcome in outcomes:
        table.add_row(
            outcome.stage,
            "ran: " + outcome.why if outcome.ran else outcome.why,
            f"{outcome.seconds:.0f}",
        )
    console.print(table)
    report = layout.eval_report(project.root)
    if report.is_file():
        _print_eval_summary(EvalReport.model_validate_json(report.read_text(encoding="utf-8")))
        console.print(f"evaluation: {report.with_suffix('.md')}")
    console.print(f"report: {_write_project_report(project)} (data, training, export, evaluation)")


def _write_project_report(project) -> Path:
    from minime.report import write_project_report

    return write_project_report(project)


@app.command(short_help="Write out/report.html: data, training, export and evaluation.")
@_user_errors
def report(directory: ProjectDir) -> None:
    """Write out/report.html, one page with the plots of every stage that has run: the
    data, the training, the export checks and the evaluation."""
    page = _write_project_report(_open(directory))
    console.print(f"report: {page}")


@app.command(short_help="Serve the assistant: API, chat widget, demo page.")
@_user_errors
def serve(
    target: Annotated[
        Path,
        typer.Argument(
            help="Project folder (its export, else profile-prompted) or .gguf.", show_default=False
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="For a project: serve this GGUF as it is (as a student), or with --profile.",
            show_default=False,
        ),
    ] = None,
    profile: ProfileOption = False,
    quant: Annotated[
        Quant | None,
        typer.Option(
            help="Exported file to serve; default: the export's default.", show_default=False
        ),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address; default: serve.host.", show_default=False)
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port; default: serve.port.", show_default=False)
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="llama.cpp CPU threads.", show_default=False)
    ] = None,
    forwarded_proxies: Annotated[
        int | None,
        typer.Option(
            help="Trusted proxies appending to X-Forwarded-For (Cloud Run: 1).", show_default=False
        ),
    ] = None,
    queue_size: Annotated[
        int | None,
        typer.Option(help="Requests that may wait; default: serve.queue_size.", show_default=False),
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(help="Requests per minute per visitor; 0: no limit.", show_default=False),
    ] = None,
    request_log: Annotated[
        Path | None, typer.Option(help="Log requests (JSONL) to this file.", show_default=False)
    ] = None,
) -> None:
    """Serve the assistant: OpenAI-compatible API, chat widget and demo page (settings:
    `serve:` in minime.yaml). A project serves its export, else (with a warning) models.chat
    with the profile in its prompt."""
    from minime.chat import choose_model
    from minime.registry import resolve
    from minime.serve import serve as run_server
    from minime.serve import serve_config

    config = serve_config(
        target,
        host=host,
        port=port,
        threads=threads,
        forwarded_proxies=forwarded_proxies,
        queue_size=queue_size,
        rate_limit=rate_limit,
    )
    quant_name = quant and quant.value
    if not target.is_dir():
        if model or profile:
            raise typer.BadParameter("--model and --profile need a project folder")
        _say(f"serving {target} as it is (no profile in its prompt)")
        run_server(target, config, quant=quant_name, request_log=request_log)
        return
    project = _open(target)
    choice = choose_model(project, model, profile=profile, quant=quant_name)
    _say(f"serving {choice.describe()}")
    for warning in choice.warnings:
        _warn(warning.replace("answering with", "serving"))
    if choice.mode == "distilled":
        run_server(target, config, quant=quant_name, request_log=request_log)
    elif choice.mode == "profile-prompted":
        if model is None:
            project.resolve_models(["chat"])
        run_server(target, config, model=choice.spec, request_log=request_log)
    else:
        resolved = resolve(choice.spec)
        if resolved.kind != "gguf" or resolved.path is None or resolved.chat_template:
            raise MinimeError(
                f"{choice.spec}: serving a model as it is needs a GGUF that carries its own "
                "chat template; add --profile to serve it with the profile"
            )
        if request_log is None and config.request_log:
            from minime.layout import REQUEST_LOG

            request_log = target / REQUEST_LOG
        run_server(resolved.path, config, request_log=request_log)


@app.command(short_help="Write out/deploy/ for Cloud Run.")
@_user_errors
def deploy(
    directory: ProjectDir,
    quant: Annotated[
        Quant | None,
        typer.Option(
            help="Exported file to deploy; default: the export's default.", show_default=False
        ),
    ] = None,
) -> None:
    """Write out/deploy/: Dockerfile, Cloud Run service.yaml and deploy.sh (settings:
    `serve.cloud_run:` in minime.yaml). A project without an export deploys models.chat with
    the profile in its prompt, with a warning."""
    from minime.chat import choose_model
    from minime.serve import deploy as write_deploy

    project = _open(directory)
    choice = choose_model(project, quant=quant and quant.value)
    if choice.mode != "distilled":
        project.resolve_models(["chat"])
    report = write_deploy(project, quant=quant and quant.value)
    console.print(
        f"{report.mode} model {report.model} ({report.model_bytes / 2**20:.0f} MB) in "
        f"{report.folder}",
        highlight=False,
    )
    for warning in choice.warnings:
        if choice.mode != "distilled":
            warning = warning.replace("answering with", "the image serves")
        _warn(warning)
    console.print(
        f"deploy with: {report.folder / 'deploy.sh'}\n  {report.gcloud}",
        markup=False,
        soft_wrap=True,
    )
