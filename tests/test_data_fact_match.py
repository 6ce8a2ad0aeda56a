"""The check that each generated question is about the fact it was written for."""

from __future__ import annotations

from minime.data.fact_match import match_facts
from minime.data.records import PromptRecord
from minime.generation import addresses_visitor_as_person, usable_question

FACTS = [
    "I have a dog, a beagle called Pixel.",
    "I work at Acme Robotics as a firmware engineer.",
    "In 2019 I ran the Berlin marathon in 3 hours 41 minutes.",
]


def _question(prompt: str, fact: str, **fields) -> PromptRecord:
    return PromptRecord.create(prompt, "profile", fact=fact, **fields)


def test_questions_keep_move_or_lose_their_fact():
    dog, work, marathon = FACTS
    records = [
        _question("Where does Ada Lindqvist work?", work),
        _question("What is the name of Ada's dog?", marathon),
        _question("Is Ada married?", dog),
        _question("¿Dónde trabaja Ada?", dog, category="multilingual", language="es"),
        PromptRecord.create("What's Ada's salary?", "edge", category="private"),
    ]
    kept, report = match_facts(records, FACTS, "Ada Lindqvist", "all-minilm-l6-v2")
    by_prompt = {r.prompt: r for r in kept}
    assert by_prompt["Where does Ada Lindqvist work?"].fact == work
    assert by_prompt["What is the name of Ada's dog?"].fact == dog
    assert "Is Ada married?" not in by_prompt
    # Other languages and other categories are not checked.
    assert by_prompt["¿Dónde trabaja Ada?"].fact == dog
    assert "What's Ada's salary?" in by_prompt
    assert (report.checked, report.kept, report.moved, report.dropped) == (3, 1, 1, 1)


def test_questions_that_speak_to_the_person_are_not_usable():
    for prompt in (
        "How can I contact you?",
        "What is the best sourdough bread you make?",
        "Can you tell me about any challenges you have faced?",
        "Wo wohnst du?",
        "Var bor din hund?",
    ):
        assert addresses_visitor_as_person(prompt), prompt
    for prompt in (
        "Can you tell me where Ada works?",
        "Could you please explain what Ada does at Acme?",
        "Do you know when Ada ran the marathon?",
    ):
        assert usable_question(prompt), prompt
    assert not usable_question("Ada speaks English.")
