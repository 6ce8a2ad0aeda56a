"""`minime data DIR` end to end with the real bundled small models."""

import pytest
from typer.testing import CliRunner

from minime.cli import app
from minime.data.records import CATEGORIES
from minime.jsonl import load_jsonl

from conftest import bundled_model_path

pytestmark = pytest.mark.integration

PROFILE = """# Ada Example

## Work
- Ada is a bridge engineer at Span AB in Malmö, Sweden.
- She joined Span AB in 2020 and leads a team of three.

## Hobbies
- Ada plays the violin in a folk band.

## What I don't discuss
My salary and my family.
"""

CONFIG = """name: Ada Example
models:
  teacher: smollm2-135m-instruct
  generators: [smollm2-135m-instruct]
chat:
  n_threads: 2
data:
  paraphrases: 1
  chains: 1
  questions_per_fact: 3
  questions_per_answer: 1
  edge_per_category: 2
  languages: [sv]
  answer_max_tokens: 64
  min_questions_per_fact: 2
  rephrase_to: 3
"""


def test_minime_data_end_to_end(tmp_path):
    bundled_model_path("smollm2-135m-instruct")
    bundled_model_path("all-minilm-l6-v2")
    (tmp_path / "profile.md").write_text(PROFILE)
    (tmp_path / "prompts.txt").write_text("Where does Ada work?\nWhat does Ada do for fun?\n")
    (tmp_path / "minime.yaml").write_text(CONFIG)
    result = CliRunner().invoke(app, ["data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "data"
    for name in (
        "collected",
        "augmented",
        "edge",
        "prompts",
        "deduped",
        "responses",
        "covered",
        "rephrased",
        "train",
        "val",
    ):
        assert (out / f"{name}.jsonl").exists(), name
    prompts = load_jsonl(out / "prompts.jsonl")
    # Every category, but questions in other languages only when the tiny generator wrote
    # some in the language asked for (the language filter drops English ones).
    assert set(CATEGORIES) - {"multilingual"} <= {p["category"] for p in prompts}
    assert len(load_jsonl(out / "deduped.jsonl")) <= len(prompts)
    rows = load_jsonl(out / "train.jsonl") + load_jsonl(out / "val.jsonl")
    single = [row for row in rows if len(row["messages"]) == 2 and "rephrase_of" not in row]
    assert single and len(single) == len(load_jsonl(out / "covered.jsonl"))
    # A rewording has its source's answer, and its source is trained on too.
    by_id = {row["id"]: row for row in single}
    for row in (r for r in rows if "rephrase_of" in r):
        source = by_id[row["rephrase_of"]]
        assert row["messages"][1] == source["messages"][1] and row["fact"] == source["fact"]
        assert row["teacher_logprobs"] is None
    for row in rows:
        # Follow-ups: another row's question and answer, then the row's own.
        assert [m["role"] for m in row["messages"]] in (
            ["user", "assistant"],
            ["user", "assistant", "user", "assistant"],
        )
        if row["teacher"] != "policy" and "rephrase_of" not in row:
            logprobs = row["teacher_logprobs"]
            assert len(logprobs["ids"]) == len(logprobs["top_ids"]) > 0
            assert len(logprobs["top_ids"][0]) == 20
    report = (out / "report.md").read_text()
    for section in (
        "## collect",
        "## dedup",
        "## respond",
        "## rephrase",
        "## split",
        "## Fact coverage",
    ):
        assert section in report
    assert (out / "dedup_thresholds.png").exists() and (out / "coverage.png").exists()
    # A second run finds every step done and changes nothing.
    before = (out / "train.jsonl").read_text()
    assert CliRunner().invoke(app, ["data", str(tmp_path)]).exit_code == 0
    assert (out / "train.jsonl").read_text() == before
