"""The `minime` command: a thin layer that parses options and calls one stage function."""

from __future__ import annotations

import functools
import os
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
if not console.is_terminal and "COLUMNS" not in os.environ:
    # Logs and CI have no width; rich's 80 columns would fold the evaluation tables.
    console.width = 160
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


@app.command(name="eval")
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
    judge: Annotated[
        str | None, typer.Option(help="Model spec of an LLM judge; default: eval.judge.")
    ] = None,
    candidates: Annotated[
        str | None,
        typer.Option(
            help="Train, export and compare these students (comma-separated model specs, or "
            "`default` for eval.candidates); slow: a full distill each.",
        ),
    ] = None,
    rerun: Annotated[
        bool, typer.Option("--rerun", help="Answer again even when kept answers match.")
    ] = False,
) -> None:
    """Score models on the persona's questions; write out/eval/report.md, .html, .json."""
    from minime.eval import compare_candidates, evaluate, parse_contender
    from minime.project import Project

    project = Project.open(directory)
    if candidates:
        if contenders:
            raise typer.BadParameter("give either contenders or --candidates, not both")
        students = None if candidates == "default" else [c.strip() for c in candidates.split(",")]
        report = compare_candidates(project, students, judge=judge)
        folder = project.out_dir("eval") / "candidates"
    else:
        chosen = [parse_contender(c, project) for c in contenders or []]
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
    table = Table(*headers, title=f"minime eval: {report.project} ({report.questions} questions)")
    for row in summary_rows(report):
        table.add_row(*row)
    console.print(table)


@app.command()
@_user_errors
def build(
    directory: ProjectDir,
    force: Annotated[bool, typer.Option("--force", help="Run every stage again.")] = False,
    record: Annotated[
        str | None,
        typer.Option(
            help="Only mark this stage's current outputs as up to date (after running it by "
            "hand), without running anything.",
        ),
    ] = None,
) -> None:
    """Run data, distill, export and eval in order, skipping stages whose inputs have not
    changed since their last complete run; print the evaluation's summary."""
    from minime.build import STAGES, record_stage
    from minime.build import build as run_build
    from minime.eval import EvalReport
    from minime.project import Project

    project = Project.open(directory)
    if record:
        if record not in STAGES:
            raise typer.BadParameter(f"--record: expected one of {', '.join(STAGES)}")
        record_stage(project, record)
        console.print(f"recorded {record} as up to date")
        return
    outcomes = run_build(project, force=force)
    table = Table("stage", "", "seconds", title=f"minime build: {project.name}")
    for outcome in outcomes:
        table.add_row(
            outcome.stage,
            "ran: " + outcome.why if outcome.ran else outcome.why,
            f"{outcome.seconds:.0f}",
        )
    console.print(table)
    report = project.out_dir("eval") / "report.json"
    _print_eval_summary(EvalReport.model_validate_json(report.read_text(encoding="utf-8")))
    console.print(f"report: {report.with_suffix('.md')}")


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


@app.command()
@_user_errors
def export(
    directory: ProjectDir,
    verify_only: Annotated[
        bool, typer.Option("--verify", help="Only verify the files exported before.")
    ] = False,
    source: Annotated[
        Path | None,
        typer.Option(help="Trained model folder; default: out/distill/model."),
    ] = None,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Write the files without verifying them.")
    ] = False,
) -> None:
    """Write the trained student as GGUF files (F16 and quantized), a Modelfile and a model
    card; verify that they tokenize, predict and stop like the trained model."""
    from minime.export import export as run_export
    from minime.export import verify
    from minime.project import Project

    project = Project.open(directory)
    if verify_only:
        report = verify(project, source)
    else:
        result = run_export(project, source, verify=not no_verify)
        report = result.verify
        table = Table("file", "size", title=f"minime export: {project.name}")
        for quant, path in result.files.items():
            default = " (default)" if quant == result.default else ""
            table.add_row(f"{path}{default}", f"{path.stat().st_size / 1e6:.1f} MB")
        console.print(table)
        if result.reused:
            console.print("source unchanged: kept the files written before")
    if report is not None:
        table = Table("file", "top-1", "KL", "ended turn", title="verified", show_header=True)
        for quant, figures in report.logits.items():
            answers = report.answers.get(quant)
            ended = f"{answers['stopped']}/{answers['prompts']}" if answers else "-"
            table.add_row(
                quant, f"{figures['top1_agreement']:.3f}", f"{figures['mean_kl']:.4f}", ended
            )
        console.print(table)
        console.print(
            f"tokenizer: {report.tokenizer['rows']} training prompts identical; "
            f"{report.seconds:.0f} s"
        )
        for warning in report.warnings:
            err_console.print(f"warning: {warning}")


@app.command()
@_user_errors
def serve(
    target: Annotated[
        Path, typer.Argument(help="Project folder (its export, else profile-prompted) or .gguf.")
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Serve the profile-prompted assistant with this model."),
    ] = None,
    quant: Annotated[
        str | None, typer.Option(help="Exported quant to serve; default: the export's default.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address; default: serve.host.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port; default: serve.port.")] = None,
    threads: Annotated[int | None, typer.Option(help="llama.cpp CPU threads.")] = None,
    forwarded_proxies: Annotated[
        int | None,
        typer.Option(help="Trusted proxies appending to X-Forwarded-For (Cloud Run: 1)."),
    ] = None,
    queue_size: Annotated[
        int | None, typer.Option(help="Requests that may wait; default: serve.queue_size.")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per minute per visitor; 0: no limit.")
    ] = None,
    request_log: Annotated[
        Path | None, typer.Option(help="Log requests (JSONL) to this file.")
    ] = None,
) -> None:
    """Serve the assistant: OpenAI-compatible API, chat widget and demo page (settings:
    `serve:` in minime.yaml)."""
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
    run_server(target, config, model=model, quant=quant, request_log=request_log)


@app.command()
@_user_errors
def deploy(
    directory: ProjectDir,
    quant: Annotated[
        str | None, typer.Option(help="Exported quant to deploy; default: the export's default.")
    ] = None,
) -> None:
    """Write out/deploy/: Dockerfile, Cloud Run service.yaml and deploy.sh (settings:
    `serve.cloud_run:` in minime.yaml)."""
    from minime.project import Project
    from minime.serve import deploy as write_deploy

    report = write_deploy(Project.open(directory), quant=quant)
    console.print(
        f"{report.mode} model {report.model} ({report.model_bytes / 2**20:.0f} MB) in "
        f"{report.folder}",
        highlight=False,
    )
    console.print(
        f"deploy with: {report.folder / 'deploy.sh'}\n  {report.gcloud}",
        markup=False,
        soft_wrap=True,
    )
