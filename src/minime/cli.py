"""The `minime` command: a thin layer that parses options and calls one stage function."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from minime.errors import MinimeError

app = typer.Typer(
    help="Turn what a person writes about themselves into a tiny chat assistant.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable)

ProjectDir = Annotated[Path, typer.Argument(help="Persona project folder.")]


def _user_errors(command: F) -> F:
    """Show a MinimeError as one line and exit 1; any other exception is a bug and keeps its
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MinimeError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_user_errors
def init(
    directory: ProjectDir,
    name: Annotated[str, typer.Option(help="The person's name.")] = "Your Name",
) -> None:
    """Write a starter persona project (profile.md, minime.yaml, prompts.txt)."""
    from minime.project import init_project

    written = init_project(directory, name)
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print(f"{directory} already has a project; nothing written")


@app.command()
@_user_errors
def models() -> None:
    """List the bundled models and whether their weights are installed."""
    from minime.registry import model_statuses

    table = Table("name", "kind", "description", "status")
    statuses = model_statuses()
    for status in statuses:
        state = f"[green]{status.path}[/]" if status.path else f"[red]{status.problem}[/]"
        table.add_row(status.model.name, status.model.kind, status.model.description, state)
    console.print(table)
    console.print(
        "Any .gguf path, Hugging Face model folder, or openai:MODEL@BASE_URL[#KEY_ENV] "
        "works wherever a model is named.",
        markup=False,
    )
    if any(status.path is None for status in statuses):
        raise typer.Exit(1)


@app.command()
@_user_errors
def chat(
    directory: ProjectDir,
    questions: Annotated[
        list[str] | None, typer.Argument(help="Questions to answer; none: interactive.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model spec; default: models.chat.")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Longest answer, in tokens.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    stats: Annotated[bool, typer.Option(help="Print token counts and speed.")] = False,
) -> None:
    """Answer questions about the person, with the profile in a model's prompt."""
    from minime.chat import open_chat
    from minime.project import Project

    project = Project.open(directory)
    assistant = open_chat(project, model)
    updates = {"max_tokens": max_tokens, "temperature": temperature}
    assistant.params = assistant.params.model_copy(
        update={k: v for k, v in updates.items() if v is not None}
    )
    with assistant.backend:
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


def _not_implemented(stage: str, issue: int) -> Callable[..., None]:
    def command(directory: ProjectDir) -> None:
        err_console.print(f"minime {stage}: not implemented yet (issue #{issue})")
        raise typer.Exit(2)

    command.__doc__ = f"[not implemented yet] the {stage} stage (issue #{issue})."
    return command


@app.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Build the training set: [STEP] DIR, STEP one of collect, augment, edge, dedup, "
    "respond, cover, split; without STEP every step runs in order. Steps resume where they "
    "stopped.",
)
@_user_errors
def data(
    args: Annotated[list[str], typer.Argument(metavar="[STEP] DIR", show_default=False)],
) -> None:
    """Build the training set (see --help)."""
    from minime.data import STEPS, build_dataset
    from minime.project import Project

    if len(args) == 2 and args[0] in STEPS:
        steps, directory = (args[0],), args[1]
    elif len(args) == 1:
        steps, directory = STEPS, args[0]
    else:
        raise typer.BadParameter(f"expected [STEP] DIR with STEP one of {', '.join(STEPS)}")
    project = Project.open(Path(directory))
    summary = build_dataset(project, steps)
    out = project.out_dir("data")
    table = Table("step", "result", title=f"minime data: {project.name}")
    for step in steps:
        report = summary.get(step, {})
        shown = {k: v for k, v in report.items() if isinstance(v, int | float | str)}
        table.add_row(step, ", ".join(f"{k}={v}" for k, v in shown.items()))
    console.print(table)
    console.print(f"report: {out / 'report.md'}")


@app.command()
@_user_errors
def distill(
    directory: ProjectDir,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last complete checkpoint.")
    ] = False,
    method: Annotated[
        str | None,
        typer.Option(
            help="sft, kd or context instead of distill.method, written to out/distill-METHOD/ "
            "for comparison."
        ),
    ] = None,
) -> None:
    """Train the student on out/data/ (settings: `distill:` in minime.yaml)."""
    from minime.distill import distill as run_distill
    from minime.distill.train import distill_stage
    from minime.project import Project

    project = Project.open(directory)
    if method not in (None, "sft", "kd", "context"):
        raise typer.BadParameter(f"--method must be sft, kd or context, not {method!r}")
    report = run_distill(project, resume=resume, method=method)
    if report is None:  # not the main process of a multi-GPU run
        return
    out = project.out_dir(distill_stage(project, method))
    table = Table("", "", title=f"minime distill: {project.name}", show_header=False)
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
        table.add_row(key, str(getattr(report, key)))
    console.print(table)
    console.print(f"model: {out / 'model'}\nreport: {out / 'report.md'}")


for _stage, _issue in (
    ("export", 5),
    ("serve", 6),
    ("eval", 7),
    ("build", 7),
):
    app.command(_stage)(_not_implemented(_stage, _issue))
