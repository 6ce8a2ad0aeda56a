"""`minime eval` with the real bundled models: question writing, dedup, workers, report."""

import json
import shutil

import pytest
import yaml

from minime.eval import evaluate, parse_contender
from minime.eval.contenders import baseline
from minime.eval.questions import CATEGORIES
from minime.project import Project

from conftest import EXAMPLE, bundled_model_path

pytestmark = pytest.mark.integration


@pytest.fixture
def small_persona(tmp_path):
    """The example persona with one question per category and a slice of its training set."""
    bundled_model_path("all-minilm-l6-v2")
    sizes = {
        name: bundled_model_path(name).stat().st_size
        for name in ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
    }
    root = tmp_path / "mara"
    (root / "out" / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE / "profile.md", root)
    lines = (EXAMPLE / "questions.jsonl").read_text().splitlines()
    firsts = {}
    for line in lines:
        firsts.setdefault(json.loads(line)["category"], line)
    (root / "questions.jsonl").write_text("\n".join(firsts.values()) + "\n")
    val = EXAMPLE / "out" / "data" / "val.jsonl"
    if val.is_file():
        rows = val.read_text().splitlines()[:20]
        (root / "out" / "data" / "val.jsonl").write_text("\n".join(rows) + "\n")
    settings = {
        "name": "Mara Lindqvist",
        "models": {
            "chat": "qwen2.5-coder-0.5b-instruct",
            "generators": ["smollm2-135m-instruct"],
        },
        "chat": {"n_threads": 1, "temperature": 0.0},
        "data": {"languages": ["sv"]},
        "eval": {"generated_facts": 2, "generated_per_category": 1, "max_tokens": 48},
    }
    (root / "minime.yaml").write_text(yaml.safe_dump(settings))
    return Project.open(root), sizes


def test_profile_prompted_and_plain_model_side_by_side(small_persona):
    project, sizes = small_persona
    contenders = [baseline(project), parse_contender("smollm2-135m-instruct", project)]
    report = evaluate(project, contenders)

    assert report.persona_questions == len(CATEGORIES)  # one per category
    # smollm2 writes the new questions; some may be rejected, but it was asked.
    assert report.generated_questions + len(report.rejected_questions) > 0
    assert report.questions == report.persona_questions + report.generated_questions
    profiled, plain = report.contenders
    assert profiled.size_bytes == sizes["qwen2.5-coder-0.5b-instruct"]
    assert plain.size_bytes == sizes["smollm2-135m-instruct"]
    # Each worker's own memory: the small model needs less than the larger one.
    assert 100 * 2**20 < plain.peak_rss_bytes < profiled.peak_rss_bytes < 2 * 2**30
    for result in report.contenders:
        assert len(result.answers) == report.questions
        assert result.tokens_per_second > 1 and result.first_token_seconds > 0
        assert sum(s.total for s in result.per_category.values()) == report.questions
    # With the profile in its prompt the model can know where Mara works; without, it cannot.
    where = [a for a in profiled.answers if a.question == "Where does Mara work?"]
    assert where[0].passed, where[0].answer
    assert not next(a for a in plain.answers if a.question == "Where does Mara work?").passed
    out = project.root / "out" / "eval"
    for name in ("report.md", "report.html", "report.json", "score_vs_size.png"):
        assert (out / name).stat().st_size > 0
