"""`out/report.html`: one page per project that a person opens after a build.

It gathers what every stage that has run wrote: the data (counts, rows per category with
samples, rejected answers with their reasons, questions per fact), the training (loss and
recall curves, recall per fact), the export checks and the evaluation. Plots are embedded,
so the page is one file that can be mailed or attached to a CI run. A stage that has not
run gets a line saying which command fills its section.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

from minime import layout
from minime.data.report import (
    fact_coverage,
    rejected_answers,
    samples_by_category,
    summary_json,
    training_rows,
)
from minime.eval import EvalReport
from minime.eval.report import COLUMNS, summary_rows
from minime.fileio import write_text_atomic
from minime.project import Project

PAGE = "report.html"


def write_project_report(project: Project) -> Path:
    """Write `out/report.html` from the outputs under `out/`; return its path."""
    out = layout.out_dir(project.root)
    sections = [
        _data_section(project, out / "data"),
        *_training_sections(project, out),
        *_export_sections(out, project.root),
        _eval_section(out / "eval", project.root),
    ]
    page = _PAGE.format(
        title=_e(f"minime: {project.name}"),
        name=_e(project.name),
        when=time.strftime("%Y-%m-%d %H:%M", time.localtime()),
        sections="\n".join(sections),
    )
    path = out / PAGE
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, page)
    return path


# Sections


def _data_section(project: Project, folder: Path) -> str:
    summary = summary_json(folder)
    rows = training_rows(folder)
    if not summary and not rows:
        return _missing("Data", f"minime data {project.root}")
    parts = ["<h2>Data</h2>"]
    counts = _data_counts(summary)
    if counts:
        parts.append(_table(["step", "what", "count"], counts))
    if rows:
        by_category = samples_by_category(rows, per_category=3)
        parts.append(
            _figure(
                _bar_plot(
                    {c: (e["train"], e["val"]) for c, e in by_category.items()},
                    ("train", "val"),
                    "training rows per category",
                    "rows",
                ),
                "Rows per category (train and validation)",
            )
        )
        parts.append("<h3>Sample rows</h3>")
        for category, entry in by_category.items():
            items = "".join(
                f"<li><b>Q:</b> {_e(q)}<br><b>A:</b> {_e(a)}</li>" for q, a in entry["samples"]
            )
            parts.append(
                f"<details><summary>{_e(category)}: {entry['train']} train, {entry['val']} "
                f"val</summary><ul>{items}</ul></details>"
            )
    respond = summary.get("respond", {})
    reasons = _add(respond.get("rejections"), respond.get("retry_rejections"))
    if reasons:
        parts.append("<h3>Rejected answers</h3>")
        parts.append(
            _figure(
                _bar_plot(
                    {r: (n,) for r, n in sorted(reasons.items(), key=lambda x: -x[1])},
                    ("rejections",),
                    "rejected teacher answers by reason",
                    "answers",
                ),
                "Reasons for rejected answers",
            )
        )
    rejected = rejected_answers(project, folder)
    if rejected:
        body = [[r["reason"], r["answer"]] for r in rejected[:50]]
        more = f" (the first 50 of {len(rejected)})" if len(rejected) > 50 else ""
        parts.append(
            f"<details><summary>{len(rejected)} rejected answers with their reasons{more}"
            f"</summary>{_table(['reason', 'answer'], body)}</details>"
        )
    if rows:
        coverage = fact_coverage(project, rows)
        if coverage:
            parts.append(_image(folder / "coverage.png", "Questions per profile fact"))
    parts.append(_image(folder / "dedup_thresholds.png", "Compression against dedup threshold"))
    parts.append(_link(folder / "report.md", "the data report (report.md)"))
    return "\n".join(p for p in parts if p)


def _data_counts(summary: dict) -> list[list[Any]]:
    wanted = {
        "collect": ("written", "real prompts"),
        "augment": ("total", "generated questions"),
        "edge": ("total", "edge cases"),
        "dedup": ("total_after", "prompts after dedup"),
        "respond": ("rows", "answered and checked rows"),
        "cover": ("answered", "rows added for facts with few questions"),
    }
    rows = []
    for step, (key, what) in wanted.items():
        if key in summary.get(step, {}):
            rows.append([step, what, summary[step][key]])
    respond = summary.get("respond", {})
    if "dropped" in respond:
        rows.append(["respond", "dropped after a retry", respond["dropped"]])
    split = summary.get("split", {})
    if "train" in split:
        rows.append(["split", "train / validation rows", f"{split['train']} / {split.get('val')}"])
    return rows


def _training_sections(project: Project, out: Path) -> list[str]:
    reports = layout.distill_reports(project.root)
    if not reports:
        return [_missing("Training", f"minime distill {project.root}")]
    sections = []
    for path in reports:
        report = _json(path)
        if not report:
            continue
        folder = path.parent
        parts = [f"<h2>Training: {_e(folder.name)} ({_e(report.get('method', ''))})</h2>"]
        figures = [
            ["student", report.get("student")],
            ["mode, tuning", f"{report.get('mode')}, {report.get('tuning')}"],
            ["steps (epochs)", f"{report.get('steps')} ({_num(report.get('epochs'))})"],
            ["time", f"{_num((report.get('seconds') or 0) / 60)} min"],
            ["tokens/s", _num(report.get("tokens_per_second"))],
            ["final train loss", _num(report.get("final_train_loss"))],
            ["best validation loss", _num(report.get("best_val_loss"))],
            [
                "fact recall: train, validation",
                _pcts(report, "fact_recall_train", "fact_recall_val"),
            ],
            ["persona's held-out fact questions", _pct(report.get("persona_fact_accuracy"))],
        ]
        parts.append(_table(["", ""], figures))
        curve = folder / "loss_curve.png"
        if curve.exists():
            parts.append(_image(curve, "Loss (train, validation) and validation fact recall"))
        else:
            parts.append(_figure(_curves(report.get("history") or []), "Loss and recall"))
        per_fact = report.get("per_fact") or {}
        if per_fact:
            ordered = sorted(per_fact.items(), key=lambda kv: (kv[1].get("val") or 0, kv[0]))
            parts.append(
                _figure(
                    _bar_plot(
                        {f: (v.get("train") or 0, v.get("val") or 0) for f, v in ordered},
                        ("train", "val"),
                        "recall per profile fact",
                        "share of questions answered with the fact",
                        horizontal=True,
                    ),
                    "Recall per profile fact (lowest validation recall first)",
                )
            )
        failures = report.get("persona_failures") or []
        if failures:
            body = [[f.get("question", ""), f.get("answer", "")] for f in failures]
            parts.append(
                f"<details><summary>{len(failures)} held-out questions answered wrong"
                f"</summary>{_table(['question', 'answer'], body)}</details>"
            )
        parts.append(_link(folder / "report.md", f"{folder.name}/report.md"))
        sections.append("\n".join(parts))
    return sections


def _export_sections(out: Path, root: Path) -> list[str]:
    sections = []
    for path in layout.export_checks(root):
        report = _json(path)
        if not report:
            continue
        manifest = _json(path.with_name(layout.EXPORT_JSON)) or {}
        sizes = {f.get("quant"): f.get("size") for f in manifest.get("files", [])}
        verdict = "passed" if report.get("passed") else "FAILED"
        parts = [f"<h2>Export checks: {_e(path.parent.name)} ({verdict})</h2>"]
        rows = []
        for quant, figures in (report.get("logits") or {}).items():
            answers = (report.get("answers") or {}).get(quant)
            size = sizes.get(quant)
            rows.append(
                [
                    quant,
                    f"{size / 1e6:.1f}" if size else "",
                    f"{figures.get('top1_agreement', 0):.3f}",
                    f"{figures.get('mean_kl', 0):.4f}",
                    f"{answers['stopped']}/{answers['prompts']}" if answers else "",
                ]
            )
        parts.append(_table(["file", "MB", "top-1 agreement", "mean KL", "ended turn"], rows))
        end = report.get("student_end_of_turn_probability")
        if end is not None:
            parts.append(f"<p>End-of-turn probability after an answer: {end:.2f}</p>")
        for kind in ("failures", "warnings"):
            items = report.get(kind) or []
            if items:
                lis = "".join(f"<li>{_e(i)}</li>" for i in items)
                parts.append(f"<p>{kind}:</p><ul>{lis}</ul>")
        sections.append("\n".join(parts))
    if not sections:
        return [_missing("Export checks", f"minime export {root}")]
    return sections


def _eval_section(folder: Path, root: Path) -> str:
    path = folder / layout.REPORT_JSON
    if not path.exists():
        return _missing("Evaluation", f"minime eval {root}")
    try:
        report = EvalReport.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return _missing("Evaluation", f"minime eval {root} (its report.json is unreadable)")
    parts = [
        f"<h2>Evaluation ({report.questions} questions)</h2>",
        _table(list(COLUMNS), summary_rows(report)),
    ]
    for png in sorted(folder.glob("*.png")):
        parts.append(_image(png, png.stem.replace("_", " ")))
    parts.append(_link(folder / "report.html", "the evaluation's own page, every answer"))
    return "\n".join(parts)


# Helpers


def _missing(title: str, command: str) -> str:
    return f"<h2>{_e(title)}</h2><p class=missing>Not run yet: <code>{_e(command)}</code></p>"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _add(*counts: dict | None) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in (count or {}).items():
            total[key] = total.get(key, 0) + n
    return total


def _e(text: Any) -> str:
    return html.escape(str(text if text is not None else ""))


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else _e(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.0f}%" if isinstance(value, int | float) else "-"


def _pcts(report: dict, *keys: str) -> str:
    return ", ".join(_pct(report.get(k)) for k in keys)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, caption: str) -> str:
    if not path.exists():
        return ""
    return _figure(path.read_bytes(), caption)


def _figure(png: bytes | None, caption: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode()
    return (
        f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _link(path: Path, text: str) -> str:
    if not path.exists():
        return ""
    relative = path.relative_to(path.parents[1]).as_posix()
    return f'<p><a href="{_e(relative)}">{_e(text)}</a></p>'


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_plot(
    values: dict[str, tuple],
    series: tuple[str, ...],
    title: str,
    unit: str,
    *,
    horizontal: bool = False,
) -> bytes | None:
    """Grouped bars, one group per key, labelled; horizontal for long labels (facts)."""
    if not values:
        return None
    plt = _pyplot()
    labels = [k if len(k) <= 60 else k[:59] + "…" for k in values]
    n, width = len(labels), 0.8 / len(series)
    if horizontal:
        fig, ax = plt.subplots(figsize=(9, max(2.5, 0.3 * n + 1.2)))
    else:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * n + 2), 3.5))
    colours = ("#4c78a8", "#f58518", "#54a24b")
    for i, name in enumerate(series):
        offsets = [x + (i - (len(series) - 1) / 2) * width for x in range(n)]
        heights = [v[i] for v in values.values()]
        bars = (ax.barh if horizontal else ax.bar)(
            offsets, heights, width, label=name, color=colours[i % 3]
        )
        ax.bar_label(bars, fmt="%.2g" if horizontal else "%d", fontsize=7, padding=2)
    if horizontal:
        ax.set_yticks(range(n), labels, fontsize=7)
        ax.set_xlabel(unit)
        ax.invert_yaxis()
    else:
        ax.set_xticks(range(n), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(unit)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    return _png(fig)


def _curves(history: list[dict]) -> bytes | None:
    """Train and validation loss, and validation fact recall, against the step."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    recall = [(h["step"], h["eval_fact_recall"]) for h in history if "eval_fact_recall" in h]
    if not train and not evals:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for points, label in ((train, "train loss"), (evals, "validation loss")):
        if points:
            ax.plot(
                *zip(*points, strict=True),
                marker="." if label.startswith("v") else None,
                label=label,
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if recall:
        right = ax.twinx()
        right.plot(*zip(*recall, strict=True), color="#54a24b", marker="o", label="fact recall")
        right.set_ylabel("validation fact recall")
        right.set_ylim(0, 1)
    ax.legend(loc="upper right")
    return _png(fig)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; max-width: 64rem; margin: 2rem auto;
  padding: 0 1rem; color: #222; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }}
table {{ border-collapse: collapse; margin: .8rem 0; }}
td, th {{ border: 1px solid #ddd; padding: .25rem .5rem; vertical-align: top; text-align: left; }}
th {{ background: #f4f4f4; }}
figure {{ margin: 1rem 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 90%; }}
details {{ margin: .4rem 0; }} summary {{ cursor: pointer; }}
.missing {{ color: #777; }}
</style></head>
<body>
<h1>{name}</h1>
<p>What minime built for {name}, written {when}: the training data, the training, the
export checks and the evaluation. <code>minime report DIR</code> writes this page again.</p>
{sections}
</body></html>
"""
