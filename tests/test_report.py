"""The reports for people: out/data/report.md and the project's out/report.html."""

import json
import re

from typer.testing import CliRunner

from minime.cli import app
from minime.data.report import format_value, step_tables, write_report
from minime.data.respond import check_key
from minime.project import Project

PROFILE = "# Ada\n\n- I build bridges at Span & Co.\n- I live in Lund.\n"


def rows():
    def row(category, question, answer, fact=None):
        return {
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ],
            "category": category,
            "fact": fact,
        }

    return [
        row(
            "question",
            "Where does Ada work?",
            "Ada works at Span & Co.",
            "I build bridges at Span & Co.",
        ),
        row("question", "Where does Ada live?", "I live in Lund.", "I live in Lund."),
        row("private", "What is her salary?", "Ada does not share that."),
    ]


def project(tmp_path):
    (tmp_path / "profile.md").write_text(PROFILE)
    out = tmp_path / "out" / "data"
    out.mkdir(parents=True)
    train, val = rows()[:2], rows()[2:]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (out / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val))
    # respond's work files: an answer, and the check that rejected it
    (out / "responses.answers.jsonl").write_text(
        json.dumps({"id": "a1", "answer": "Ada is 41."}) + "\n"
    )
    judge = "qwen2.5-coder-1.5b-instruct"
    check = {"id": check_key(Project.open(tmp_path), "a1", judge), "reason": "unsupported: 41"}
    (out / "responses.answers-checks.jsonl").write_text(json.dumps(check) + "\n")
    summary = {
        "dedup": {
            "compression_ratio": 1.27007299270073,
            "by_category": {"question": {"before": 421, "after": 322}},
            "largest_clusters": [{"size": 3, "ids": ["x"], "prompts": ["a", "b"]}],
        },
        "respond": {"rows": 2, "dropped": 1, "rejections": {"unsupported": 1}},
        "split": {"train": 2, "val": 1},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return Project.open(tmp_path), out, summary


def test_summary_values_are_for_people():
    assert format_value(1.27007299270073) == "1.27"
    lines = step_tables({"by_category": {"question": {"before": 421, "after": 322}}})
    assert "| question | 421 | 322 |" in lines
    assert not any("{" in line for line in lines)
    lines = step_tables({"largest_clusters": [{"size": 3, "ids": ["x"], "prompts": ["a", "b"]}]})
    assert "| 3 | a, b |" in lines  # the items themselves, not "1 items"


def test_data_report_shows_samples_rejections_and_labelled_coverage(tmp_path):
    proj, out, summary = project(tmp_path)
    text = write_report(proj, out, summary).read_text()
    assert "items (see" not in text and "{'before'" not in text
    assert "| compression ratio | 1.27 |" in text
    assert "### question (2 train, 0 val)" in text
    assert "**A:** I live in Lund." in text  # the first-person answer shows
    assert "| unsupported: 41 | Ada is 41. |" in text
    assert (out / "coverage.png").stat().st_size > 1000


def test_project_page_has_every_stage(tmp_path):
    proj, out, summary = project(tmp_path)
    write_report(proj, out, summary)
    distill = tmp_path / "out" / "distill"
    distill.mkdir()
    (distill / "report.json").write_text(
        json.dumps(
            {
                "student": "smollm2-135m-instruct",
                "method": "kd",
                "steps": 10,
                "seconds": 120.0,
                "fact_recall_val": 0.5,
                "per_fact": {"I live in Lund.": {"train": 1.0, "val": 0.5}},
                "history": [
                    {"step": 5, "loss": 2.0},
                    {"step": 10, "loss": 1.0, "eval_loss": 1.5, "eval_fact_recall": 0.5},
                ],
                "persona_failures": [{"question": "Where does Ada live?", "answer": "Malmö."}],
            }
        )
    )
    export = tmp_path / "out" / "export"
    export.mkdir()
    (export / "verify.json").write_text(
        json.dumps(
            {
                "passed": True,
                "logits": {"q8_0": {"top1_agreement": 0.97, "mean_kl": 0.004}},
                "answers": {"q8_0": {"stopped": 50, "prompts": 50}},
                "warnings": ["1 answer loops"],
            }
        )
    )
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "report.html").read_text()
    text = re.sub(r"data:image/png;base64,[^\"]+", "IMG", page)
    for heading in (
        "Data",
        "Training: distill (kd)",
        "Export checks: export (passed)",
        "Evaluation",
    ):
        assert f"<h2>{heading}</h2>" in text
    assert "Not run yet: <code>minime eval" in text
    assert "unsupported: 41" in text and "Span &amp; Co." in text
    assert "Where does Ada live?" in text and "0.970" in text and "1 answer loops" in text
    assert text.count("IMG") >= 4  # rows per category, rejections, coverage, curves, per fact
