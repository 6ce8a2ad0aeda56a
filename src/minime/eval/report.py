"""The evaluation's report: `report.json`, `report.md`, `report.html` and two PNG plots.

Model answers are untrusted text: the HTML escapes everything it shows, and the Markdown
escapes HTML and table separators, so an answer cannot inject markup into either.
"""

from __future__ import annotations

import html
from pathlib import Path

from minime.eval.questions import CATEGORIES
from minime.fileio import write_text_atomic
from minime.layout import REPORT_JSON

#: Plot file -> the contender field on its x axis.
PLOTS = {"score_vs_size.png": "size_bytes", "score_vs_speed.png": "tokens_per_second"}
COLUMNS = (
    "contender",
    "score",
    *CATEGORIES,
    "generated",
    "size MB",
    "peak RSS MB",
    "first token s",
    "tok/s",
)


def summary_rows(report) -> list[list[str]]:
    """One row per contender, in the order of COLUMNS (also the CLI's table)."""
    rows = []
    for c in report.contenders:
        cells = [c.label, _pct(c.score)]
        for category in CATEGORIES:
            s = c.per_category.get(category)
            cells.append(f"{s.passed}/{s.total}" if s else "")
        generated = [a.passed for a in c.answers if a.source == "generated"]
        cells.append(f"{sum(generated)}/{len(generated)}" if generated else "")
        cells += [
            _mb(c.size_bytes),
            _mb(c.peak_rss_bytes),
            f"{c.first_token_seconds:.2f}",
            f"{c.tokens_per_second:.1f}",
        ]
        rows.append(cells)
    return rows


def write_report(report, out: Path) -> None:
    """Write report.json, the plots, report.md and report.html into `out`."""
    write_text_atomic(out / REPORT_JSON, report.model_dump_json(indent=2) + "\n")
    for name, field in PLOTS.items():
        _plot(report, field, out / name)
    write_text_atomic(out / "report.md", _markdown(report))
    write_text_atomic(out / "report.html", _html(report))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _mb(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:.0f}"


def _setup_lines(report) -> list[str]:
    lines = [
        f"{report.questions} questions: {report.persona_questions} from the persona's file, "
        f"{report.generated_questions} written from the profile "
        f"({len(report.rejected_questions)} generated ones left out, "
        f'{report.training_prompts} training prompts checked; column "generated": '
        "those questions, of all categories). Greedy answers of at most "
        f"{report.max_tokens} tokens; each contender in a process of its own; first token: "
        "the median over its answers.",
    ]
    if report.persona_near_training:
        lines.append(
            f"{len(report.persona_near_training)} of the persona's questions are near a "
            "training prompt (within the dedup distance): "
            + "; ".join(report.persona_near_training)
        )
    if report.judge:
        lines.append(
            f"LLM judge {report.judge} agrees with the pattern checks on "
            f"{_pct(report.judge_agreement)} of the answers."
        )
    return lines


def _md(text: str) -> str:
    """Untrusted text for a Markdown table cell or list item."""
    return html.escape(" ".join(text.split())).replace("|", "\\|")


def _markdown(report) -> str:
    lines = [f"# Evaluation: {report.project}", ""]
    lines += [f"{line}\n" for line in _setup_lines(report)]
    lines += ["| " + " | ".join(COLUMNS) + " |"]
    lines += ["| --- | " + " | ".join("---:" for _ in COLUMNS[1:]) + " |"]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in summary_rows(report)]
    lines += [""]
    if report.judge:
        lines += ["| contender | judge agreement |", "| --- | ---: |"]
        lines += [f"| {_md(c.label)} | {_pct(c.judge_agreement)} |" for c in report.contenders]
        lines += [""]
    lines += [f"![{name.removesuffix('.png')}]({name})" for name in PLOTS]
    for c in report.contenders:
        failed = [a for a in c.answers if not a.passed]
        lines += ["", f"## Failed: {_md(c.label)} ({len(failed)} of {len(c.answers)})", ""]
        for a in failed:
            judge = f" (judge: {_md(a.judge_reason or '')})" if a.judge_reason else ""
            lines.append(
                f"- [{a.category}, {a.source}] **{_md(a.question)}** → {_md(a.answer) or '(empty)'}"
                f" — *{_md('; '.join(a.reasons))}*{judge}"
            )
    if report.rejected_questions:
        lines += ["", "## Generated questions left out", ""]
        lines += [
            f"- [{r['category']}] {_md(r['question'])} — {_md(r['reason'])}"
            for r in report.rejected_questions
        ]
    return "\n".join(lines) + "\n"


def _html(report) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>"
        for row in summary_rows(report)
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Evaluation: {e(report.project)}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "td:not(:first-child){text-align:right}.why{color:#a00}.ans{white-space:pre-wrap}"
        "</style></head><body>",
        f"<h1>Evaluation: {e(report.project)}</h1>",
        "<p><a href='../report.html'>The project's page: data, training, export checks</a></p>",
        *(f"<p>{e(line)}</p>" for line in _setup_lines(report)),
        f"<table><tr>{head}</tr>{body}</table>",
        *(f"<img src='{name}' alt='{e(name)}'>" for name in PLOTS),
    ]
    for c in report.contenders:
        failed = [a for a in c.answers if not a.passed]
        parts.append(f"<h2>Failed: {e(c.label)} ({len(failed)} of {len(c.answers)})</h2><ul>")
        for a in failed:
            judge = f"<br>judge: {e(a.judge_reason)}" if a.judge_reason else ""
            parts.append(
                f"<li>[{e(a.category)}, {e(a.source)}] <b>{e(a.question)}</b>"
                f"<div class='ans'>{e(a.answer) or '(empty)'}</div>"
                f"<span class='why'>{e('; '.join(a.reasons))}</span>{judge}</li>"
            )
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _plot(report, field: str, path: Path) -> None:
    """Score against size (MB, log scale) or decode speed, one labelled point per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in report.contenders:
        x = getattr(c, field)
        if not x:
            continue
        x = x / 2**20 if field == "size_bytes" else x
        marker = "s" if c.mode == "profile" else "o"
        ax.plot(x, 100 * c.score, marker, markersize=8)
        ax.annotate(
            c.label, (x, 100 * c.score), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    if field == "size_bytes":
        ax.set_xscale("log")
        ax.set_xlabel("model file size, MB (log scale)")
    else:
        ax.set_xlabel("decode speed, tokens/s")
    ax.margins(x=0.25)  # room for the labels of the outermost points
    ax.set_ylabel("score, % of questions passed")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.set_title(f"{report.project}: score vs {'size' if field == 'size_bytes' else 'speed'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
