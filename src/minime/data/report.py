"""`out/data/report.md`: what each step of `minime data` did, in numbers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from minime.data.generate import profile_facts
from minime.fileio import write_text_atomic
from minime.jsonl import load_jsonl
from minime.project import Project


def write_report(project: Project, out: Path, summary: dict) -> Path:
    """Write report.md (and coverage.png) from the steps' summaries and output files."""
    lines = [f"# Training data for {project.name}", ""]
    for step, report in summary.items():
        lines += [f"## {step}", "", *_table(report), ""]
    if (out / "dedup_thresholds.png").exists():
        lines += ["![compression against threshold](dedup_thresholds.png)", ""]
    rows = []
    for name in ("train.jsonl", "val.jsonl"):
        if (out / name).exists():
            rows += load_jsonl(out / name)
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
            "| questions | fact |",
            "| ---: | --- |",
            *(f"| {n} | {fact} |" for fact, n in sorted(coverage.items(), key=lambda x: x[1])),
            "",
            "![questions per fact](coverage.png)",
            "",
        ]
        _plot_coverage(coverage, target, out / "coverage.png")
    path = out / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def fact_coverage(project: Project, rows: list[dict]) -> dict[str, int]:
    """Distinct answered questions per profile fact (from the fact each was written for)."""
    counts = Counter(row.get("fact") for row in rows if row.get("fact"))
    return {fact.text: counts.get(fact.text, 0) for fact in profile_facts(project.profile)}


def _table(report: dict) -> list[str]:
    rows = ["| | |", "| --- | --- |"]
    for key, value in report.items():
        if isinstance(value, list):
            value = f"{len(value)} items (see the step's JSON report)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        rows.append(f"| {key} | {value} |")
    return rows


def _plot_coverage(coverage: dict[str, int], target: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted(coverage.values())
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(counts)), counts, color="#4c78a8")
    ax.axhline(target, color="#e45756", linestyle="--", label="target")
    ax.set_xlabel("profile fact (sorted)")
    ax.set_ylabel("distinct questions")
    ax.set_title("Questions per profile fact")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
