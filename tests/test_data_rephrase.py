"""`rephrase` adds checked rewordings of fact questions, answered by their source's answer,
and `split` keeps them with their source."""

from test_data_cover import fake_encode

from minime.backends import ChatBackend, Delta, Usage
from minime.config import DataConfig
from minime.data import cover as cover_module
from minime.data.rephrase import rephrase
from minime.data.split import split
from minime.jsonl import load_jsonl, write_jsonl
from minime.project import Project

PROFILE = "# Ada Byte\n\n- Ada builds bridges in Lund.\n- Ada keeps bees on her roof.\n"
BRIDGES, BEES = "Ada builds bridges in Lund.", "Ada keeps bees on her roof."


class Rewriter(ChatBackend):
    """Writes good rewordings of the question it is given, and the kinds the checks drop."""

    name = "rewriter"

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, messages, params):
        self.calls += 1
        question = messages[-1]["content"].split("Question: ")[1].split("\n")[0]
        lines = [
            question,  # the source itself
            "Where do you build bridges?",  # asks the visitor's assistant, not about Ada
            "Does Ada build bridges in Paris?",  # a place the profile does not name
            "Ada builds bridges.",  # not a question
            *(f"{question[:-1]}, variant {self.calls}-{i}?" for i in range(3)),
        ]
        yield Delta(text="\n".join(lines))
        yield Delta(text="", finish_reason="stop", usage=Usage(10, 5))


def row(question, fact, answer, category="question", language=None):
    return {
        "id": question,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "category": category,
        "source": "profile",
        "language": language,
        "fact": fact,
        "teacher": "teacher",
        "teacher_logprobs": {"ids": [1], "tokens": ["x"], "top": []},
    }


def test_rephrase_tops_up_short_facts_with_checked_rewordings(tmp_path, monkeypatch):
    monkeypatch.setattr(cover_module, "encode", fake_encode)
    (tmp_path / "profile.md").write_text(PROFILE)
    project = Project.open(tmp_path)
    covered, dst = tmp_path / "covered.jsonl", tmp_path / "rephrased.jsonl"
    existing = [
        row("What does Ada build?", BRIDGES, "Ada builds bridges in Lund."),
        *(row(f"Does Ada keep bees, take {i}?", BEES, "Yes, on her roof.") for i in range(4)),
        row("Was baut Ada?", BRIDGES, "Ada baut Brücken in Lund.", "multilingual", "de"),
        row("Hi!", None, "Hello! Ask me about Ada.", "greeting"),
    ]
    write_jsonl(covered, existing)
    writer = Rewriter()

    report = rephrase(project, covered, dst, [writer], "fake", DataConfig(rephrase_to=4))

    rows = load_jsonl(dst)
    assert rows[: len(existing)] == existing
    added = rows[len(existing) :]
    # Bees has its 4 English questions already; bridges is asked, and so is the German one.
    assert writer.calls == 2 and report.sources == 2
    sources = {r["rephrase_of"] for r in added}
    assert sources <= {"What does Ada build?", "Was baut Ada?"}
    for new in added:
        question = new["messages"][0]["content"]
        assert "variant" in question  # only the good rewordings pass the checks
        source = next(r for r in existing if r["id"] == new["rephrase_of"])
        assert new["messages"][1] == source["messages"][1]
        assert (new["fact"], new["category"]) == (source["fact"], source["category"])
        assert new["teacher_logprobs"] is None  # the teacher answered another wording
    assert report.rejected >= 4 and report.added == len(added) > 0
    assert report.english_questions_per_fact[BRIDGES] == 1 + sum(
        r["rephrase_of"] == "What does Ada build?" for r in added
    )
    # A rerun asks nothing again and writes the same rows.
    again = rephrase(project, covered, dst, [writer], "fake", DataConfig(rephrase_to=4))
    assert writer.calls == 2 and load_jsonl(dst) == rows and again == report


def test_rephrase_to_zero_adds_nothing(tmp_path):
    (tmp_path / "profile.md").write_text(PROFILE)
    covered, dst = tmp_path / "covered.jsonl", tmp_path / "rephrased.jsonl"
    write_jsonl(covered, [row("What does Ada build?", BRIDGES, "Bridges.")])
    writer = Rewriter()
    project = Project.open(tmp_path)
    report = rephrase(project, covered, dst, [writer], "fake", DataConfig(rephrase_to=0))
    assert writer.calls == 0 and report.added == 0
    assert load_jsonl(dst) == load_jsonl(covered)


def test_split_keeps_rephrasings_with_their_source(tmp_path):
    rows = [row(f"What does Ada build, take {i}?", BRIDGES, "Bridges.") for i in range(10)]
    rephrasings = [
        {**r, "id": f"{r['id']}-again", "rephrase_of": r["id"]} for r in rows for _ in (0,)
    ]
    write_jsonl(tmp_path / "rephrased.jsonl", rows + rephrasings)
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"

    report = split(tmp_path / "rephrased.jsonl", train, val, 0.2, seed=0)

    train_ids = {r["id"] for r in load_jsonl(train)}
    val_rows = load_jsonl(val)
    assert len(val_rows) == 2 and not any(r.get("rephrase_of") for r in val_rows)
    for r in rephrasings:
        # With its source in train, or left out with its source in validation.
        assert (r["id"] in train_ids) == (r["rephrase_of"] in train_ids)
    assert report.rephrasings == 8 and report.train == 16
