"""`cover` tops up facts with too few answered questions, skipping near-duplicates."""

import hashlib
import re

import numpy as np

from minime.backends import ChatBackend, Delta, Usage
from minime.config import DataConfig
from minime.data import cover as cover_module
from minime.data import respond as respond_module
from minime.data.cover import cover
from minime.data.fact_match import FactMatchReport
from minime.jsonl import load_jsonl, write_jsonl
from minime.project import Project

from conftest import FakeTeacher

PROFILE = "# Ada Byte\n\n- Ada builds bridges in Lund.\n- Ada keeps bees on her roof.\n"
BRIDGES, BEES = "Ada builds bridges in Lund.", "Ada keeps bees on her roof."


class QuestionWriter(ChatBackend):
    """A generator that writes new numbered questions, plus one already in the data."""

    name = "question-writer"

    def __init__(self) -> None:
        self.calls = 0

    def stream(self, messages, params):
        self.calls += 1
        topic = "bees" if "bees" in messages[-1]["content"] else "bridges"
        lines = [f"What about Ada and {topic}, part {self.calls}-{i}?" for i in range(4)]
        lines.append("What does Ada build?")
        yield Delta(text="\n".join(lines))
        yield Delta(text="", finish_reason="stop", usage=Usage(10, 5))


class FactTeacher(FakeTeacher):
    """Answers with the fact its instructions quote (respond's fact hint or restatement)."""

    def stream(self, messages, params):
        self.asked.append(messages)
        fact = re.search(r'"(Ada [^"]+)"', messages[0]["content"] + messages[-1]["content"])
        yield Delta(text=fact.group(1) if fact else self.default)
        yield Delta(text="", finish_reason="stop", usage=Usage(10, 5))


def fake_encode(texts, embedder):
    """One random unit vector per distinct text: equal texts are duplicates, others are not."""
    rows = []
    for text in texts:
        seed = int(hashlib.sha256(text.lower().encode()).hexdigest()[:8], 16)
        vector = np.random.default_rng(seed).normal(size=64)
        rows.append(vector / np.linalg.norm(vector))
    return np.asarray(rows, dtype=np.float32)


def unchecked_facts(monkeypatch) -> list[str]:
    """Let every question keep its fact (`fact_match` has its own tests); the embedders
    the check was called with are collected in the list returned."""
    used = []

    def keep(records, facts, name, embedder):
        used.append(embedder)
        return records, FactMatchReport(checked=len(records), kept=len(records))

    monkeypatch.setattr(respond_module, "match_facts", keep)
    return used


def row(question, fact):
    return {
        "id": question,
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Ada builds bridges in Lund."},
        ],
        "category": "question",
        "fact": fact,
    }


def test_cover_tops_up_short_facts_and_skips_duplicates(tmp_path, monkeypatch):
    embedded = []
    monkeypatch.setattr(
        cover_module, "encode", lambda texts, e: embedded.extend(texts) or fake_encode(texts, e)
    )
    checked_with = unchecked_facts(monkeypatch)
    (tmp_path / "profile.md").write_text(PROFILE)
    project = Project.open(tmp_path)
    responses, dst = tmp_path / "responses.jsonl", tmp_path / "covered.jsonl"
    existing = [row("What does Ada build?", BRIDGES), row("Where does Ada work?", BRIDGES)]
    write_jsonl(responses, existing)
    config = DataConfig(min_questions_per_fact=5, judge=False)
    writer, teacher = QuestionWriter(), FactTeacher({})

    report = cover(project, responses, dst, [writer], teacher, "fake", config)

    rows = load_jsonl(dst)
    # No question twice, whatever its fact: the writer offers "What does Ada build?" for
    # the bees too, and the fact check after could tag it as the bridges one's copy.
    asked = [r["messages"][0]["content"].lower() for r in rows]
    assert len(asked) == len(set(asked))
    per_fact = {fact: sum(r["fact"] == fact for r in rows) for fact in (BRIDGES, BEES)}
    assert per_fact[BRIDGES] >= 5 and per_fact[BEES] >= 5
    assert rows[:2] == existing
    assert report.short_before == 2 and report.short_after == {}
    assert report.near_duplicates >= 2  # "What does Ada build?" again, for either fact
    assert report.rows == len(rows) == 2 + report.answered
    # Compared as dedup compares them: the person's name taken out.
    assert "What does build?" in embedded and not any("Ada" in text for text in embedded)
    # The new questions were checked to be about their facts, with the same encoder.
    assert checked_with and set(checked_with) == {"fake"}
    # A rerun asks and answers nothing again.
    calls, asked = writer.calls, len(teacher.asked)
    again = cover(project, responses, dst, [writer], teacher, "fake", config)
    assert (writer.calls, len(teacher.asked)) == (calls, asked)
    assert load_jsonl(dst) == rows and again.rows == report.rows


def test_cover_reports_facts_it_could_not_fill(tmp_path, monkeypatch):
    monkeypatch.setattr(cover_module, "encode", fake_encode)
    unchecked_facts(monkeypatch)
    (tmp_path / "profile.md").write_text(PROFILE)
    project = Project.open(tmp_path)
    write_jsonl(tmp_path / "responses.jsonl", [])
    config = DataConfig(min_questions_per_fact=5, judge=False)
    # Every answer declines, so none of the fact questions is accepted.
    teacher = FakeTeacher({}, default="Sorry, I can't share that.")
    report = cover(
        project,
        tmp_path / "responses.jsonl",
        tmp_path / "c.jsonl",
        [QuestionWriter()],
        teacher,
        "fake",
        config,
    )
    assert report.answered == 0
    assert report.short_after == {BRIDGES: 0, BEES: 0}
