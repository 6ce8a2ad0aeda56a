"""`out/data/report.md`: what each step of `minime data` did, for a person to read.

Figures are rounded, nested counts become tables, lists show their items, and the report
shows sample rows of every category, the answers the checks rejected with their reasons,
and the questions per profile fact (`coverage.png`, one labelled bar per fact).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from minime.data.respond import check_key
from minime.fileio import write_text_atomic
from minime.generation import profile_facts
from minime.jsonl import load_jsonl
from minime.project import Project

#: Sample rows shown per category, and rejected answers shown in all.
SAMPLES_PER_CATEGORY = 3
REJECTED_SHOWN = 20
#: Longest text in a table cell or sample, in characters.
CELL_CHARS = 300


def write_report(project: Project, out: Path, summary: dict) -> Path:
    """Write report.md (and coverage.png) from the steps' summaries and output files."""
    lines = [f"# Training data for {project.name}", ""]
    for step, report in summary.items():
        lines += [f"## {step}", "", *step_tables(report, project.root), ""]
        if step == "dedup" and (out / "dedup_thresholds.png").exists():
            lines += ["![compression against threshold](dedup_thresholds.png)", ""]
    rows = training_rows(out)
    if rows:
        lines += ["## Sample rows per category", "", *_samples(rows), ""]
    rejected = rejected_answers(project, out)
    if rejected:
        lines += [
            "## Rejected answers",
            "",
            f"{len(rejected)} teacher answers failed a check (first tries and retries); the "
            f"first {min(len(rejected), REJECTED_SHOWN)}:",
            "",
            "| reason | answer |",
            "| --- | --- |",
            *(
                f"| {_cell(r['reason'])} | {_cell(r['answer'])} |"
                for r in rejected[:REJECTED_SHOWN]
            ),
            "",
        ]
    if rows:
        coverage = fact_coverage(project, rows)
        target = project.config.data.min_questions_per_fact
        short = {fact: n for fact, n in coverage.items() if n < target}
        lines += [
            "## Fact coverage",
            "",
            f"{len(coverage) - len(short)} of {len(coverage)} profile facts are asked about by "
            f"at least {target} distinct questions in train + val.",
            "",
            "![questions per fact](coverage.png)",
            "",
            "| questions | fact |",
            "| ---: | --- |",
            *(
                f"| {n} | {_cell(fact)} |"
                for fact, n in sorted(coverage.items(), key=lambda x: x[1])
            ),
            "",
        ]
        plot_coverage(coverage, target, out / "coverage.png")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def training_rows(out: Path) -> list[dict]:
    """The rows of train.jsonl and val.jsonl, each with its "split"."""
    rows = []
    for split in ("train", "val"):
        path = out / f"{split}.jsonl"
        if path.exists():
            rows += [{**row, "split": split} for row in load_jsonl(path)]
    return rows


def fact_coverage(project: Project, rows: list[dict]) -> dict[str, int]:
    """Distinct answered questions per profile fact (from the fact each was written for)."""
    counts = Counter(row.get("fact") for row in rows if row.get("fact"))
    return {fact.text: counts.get(fact.text, 0) for fact in profile_facts(project.profile)}


def samples_by_category(rows: list[dict], per_category: int = SAMPLES_PER_CATEGORY) -> dict:
    """Category -> {"train": n, "val": n, "samples": [(question, answer), ...]}."""
    found: dict[str, dict] = defaultdict(lambda: {"train": 0, "val": 0, "samples": []})
    for row in rows:
        entry = found[row.get("category") or "?"]
        entry[row.get("split", "train")] += 1
        messages = row.get("messages") or []
        if len(entry["samples"]) < per_category and len(messages) >= 2:
            entry["samples"].append((messages[-2]["content"], messages[-1]["content"]))
    return dict(sorted(found.items()))


def rejected_answers(project: Project, out: Path) -> list[dict]:
    """The teacher's answers that a check rejected, with the reason: read from respond's
    and cover's work files (answers by task id, and checks keyed by that id and the judge).

    The work files do not keep the question, so only the answer and the reason are known.
    """
    rejected = []
    judges = {project.config.models.teacher, None}
    for answers_file in sorted(out.glob("*.answers.jsonl")) + sorted(out.glob("*.retries.jsonl")):
        checks_file = answers_file.with_name(answers_file.stem + "-checks.jsonl")
        if not checks_file.exists():
            continue
        reasons = {row["id"]: row.get("reason") for row in _records(checks_file)}
        for answer in _records(answers_file):
            for judge in judges:
                reason = reasons.get(check_key(project, answer["id"], judge))
                if reason:
                    rejected.append({"reason": reason, "answer": answer.get("answer", "")})
                    break
    return rejected


def _records(path: Path) -> list[dict]:
    try:
        return [r for r in load_jsonl(path) if "id" in r]
    except Exception:  # a work file is a cache: a broken one only leaves the report shorter
        return []


def step_tables(report: dict, root: Path | None = None) -> list[str]:
    """A step's summary as Markdown: its figures in one table, then one table per nested
    count (`by_category`: before/after per category) or list of records."""
    rows = ["| | |", "| --- | --- |"]
    extra: list[str] = []
    for key, value in report.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            extra += ["", f"{_label(key)}:", "", *_records_table(value)]
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            extra += ["", f"{_label(key)}:", "", *_list_table(value)]
            continue
        rows.append(f"| {_label(key)} | {_cell(format_value(value, root))} |")
    return rows + extra


def format_value(value: Any, root: Path | None = None) -> str:
    """A summary value for a person: floats to 3 significant digits, dicts as `a: 1, b: 2`,
    lists item by item, paths relative to the project."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v, root)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(format_value(v, root) for v in value) or "none"
    if isinstance(value, str) and root is not None and value.startswith(str(root)):
        return value[len(str(root)) :].lstrip("/")
    return str(value)


def _records_table(value: dict[str, dict]) -> list[str]:
    columns = list(dict.fromkeys(k for inner in value.values() for k in inner))
    lines = ["| | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, inner in value.items():
        cells = [_cell(format_value(inner.get(c, ""))) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _list_table(items: list[dict], limit: int = 10) -> list[str]:
    columns = [c for c in dict.fromkeys(k for item in items for k in item) if c != "ids"]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for item in items[:limit]:
        value = item.get
        lines.append("| " + " | ".join(_cell(format_value(value(c, ""))) for c in columns) + " |")
    if len(items) > limit:
        lines += ["", f"and {len(items) - limit} more (summary.json has them all)"]
    return lines


def _samples(rows: list[dict]) -> list[str]:
    lines = []
    for category, entry in samples_by_category(rows).items():
        lines += [f"### {category} ({entry['train']} train, {entry['val']} val)", ""]
        for question, answer in entry["samples"]:
            lines += [f"- **Q:** {_cell(question)}  ", f"  **A:** {_cell(answer)}"]
        lines.append("")
    return lines


def _label(key: str) -> str:
    return key.replace("_", " ")


def _cell(text: Any) -> str:
    """Text that fits one Markdown table cell: one line, pipes escaped, shortened."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def plot_coverage(coverage: dict[str, int], target: int, path: Path) -> None:
    """One horizontal bar per profile fact, labelled with the fact, fewest questions first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = sorted(coverage.items(), key=lambda x: (x[1], x[0]), reverse=True)
    labels = [fact if len(fact) <= 60 else fact[:59] + "…" for fact, _ in items]
    counts = [n for _, n in items]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.28 * len(items) + 1.2)))
    colours = ["#e45756" if n < target else "#4c78a8" for n in counts]
    ax.barh(range(len(counts)), counts, color=colours)
    ax.set_yticks(range(len(counts)), labels, fontsize=7)
    for y, n in enumerate(counts):
        ax.text(n + 0.2, y, str(n), va="center", fontsize=7)
    ax.axvline(target, color="#e45756", linestyle="--", label=f"target ({target})")
    ax.set_xlabel("distinct answered questions (train + val)")
    ax.set_title("Questions per profile fact (red: under the target)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_json(out: Path) -> dict:
    """The data stage's summary.json, or {} when there is none."""
    try:
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
