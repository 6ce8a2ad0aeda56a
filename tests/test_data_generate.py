"""Augment, edge cases and split, driven by scripted generators."""

from minime.config import DataConfig
from minime.data.augment import augment
from minime.data.edge import edge_cases
from minime.data.records import PromptRecord
from minime.data.split import split
from minime.generation import parse_lines, private_section, profile_facts
from minime.jsonl import load_jsonl, write_jsonl
from minime.project import Project

from conftest import FakeTeacher

PROFILE = """# Ada Example

Intro sentence that is long enough to count.

## Work
- Ada builds bridges at Span AB in Malmö,
  mostly in steel.
- She joined Span AB in 2020.

## What I don't discuss
My salary and my family.
"""


class ListGenerator(FakeTeacher):
    """Answers every request with a numbered list of distinct lines."""

    name = "fake-generator"

    def __init__(self):
        super().__init__({})
        self.calls = 0

    def stream(self, messages, params):
        self.calls += 1
        lines = (f"{i}. {self.name} asks Ada {self.calls}-{i}?" for i in range(1, 30))
        self.default = "\n".join(lines)
        return super().stream(messages, params)


def project(tmp_path) -> Project:
    (tmp_path / "profile.md").write_text(PROFILE)
    (tmp_path / "prompts.txt").write_text("Where does Ada work?\nWhen did she join?\n")
    return Project.open(tmp_path)


def test_parse_lines_strips_numbering_quotes_and_duplicates():
    text = 'Here you go:\n1. "Where does Ada work?"\n2) where does ada work?\n- Who is Ada?\n\nok'
    assert parse_lines(text) == ["Where does Ada work?", "Who is Ada?"]


def test_profile_facts_and_private_section():
    facts = profile_facts(PROFILE)
    assert [f.text for f in facts] == [
        "Intro sentence that is long enough to count.",
        "Ada builds bridges at Span AB in Malmö, mostly in steel.",
        "She joined Span AB in 2020.",
    ]
    assert facts[1].section == "Work"
    assert private_section(PROFILE) == "My salary and my family."


def test_augment_writes_paraphrases_chains_and_fact_questions(tmp_path):
    proj = project(tmp_path)
    collected = tmp_path / "collected.jsonl"
    write_jsonl(
        collected,
        [
            PromptRecord.create("Where does Ada work?", "real").model_dump(),
            PromptRecord.create("When did she join?", "real").model_dump(),
        ],
    )
    config = DataConfig(paraphrases=2, chains=1, questions_per_fact=3, questions_per_answer=0)
    generator = ListGenerator()
    report = augment(proj, collected, tmp_path / "augmented.jsonl", [generator], config)
    rows = [PromptRecord.model_validate(r) for r in load_jsonl(tmp_path / "augmented.jsonl")]
    # 3 questions per fact, and 2 more per fact, each in the next other language.
    assert (report.paraphrases, report.chained, report.profile_questions) == (4, 1, 15)
    translated = [r for r in rows if r.category == "multilingual"]
    assert [r.language for r in translated] == ["sv", "de", "es", "fr", "sv", "de"]
    assert all(r.fact for r in translated)
    assert report.facts == 3 and report.total == len(rows) == 20
    assert {r.source for r in rows} == {"augment", "profile"}
    assert sum(r.category == "chained" for r in rows) == 1
    fact_rows = [r for r in rows if r.source == "profile"]
    assert {r.fact for r in fact_rows} == {f.text for f in profile_facts(PROFILE)}
    # The generator saw the profile in its system prompt.
    assert PROFILE.strip() in generator.asked[0][0]["content"]
    # A rerun resumes from the finished task file: no new generation.
    calls = generator.calls
    augment(proj, collected, tmp_path / "augmented.jsonl", [generator], config)
    assert generator.calls == calls


def test_each_name_and_number_of_a_fact_gets_questions_it_answers(tmp_path):
    proj = project(tmp_path)
    write_jsonl(tmp_path / "collected.jsonl", [])
    generator = FakeTeacher({}, default="Where does Ada work?\nDoes Ada work at Span AB?")
    config = DataConfig(
        paraphrases=0,
        chains=0,
        questions_per_fact=0,
        translated_per_fact=0,
        questions_per_answer=2,
    )
    augment(proj, tmp_path / "collected.jsonl", tmp_path / "augmented.jsonl", [generator], config)
    asked = [m[-1]["content"] for m in generator.asked if 'whose answer is "' in m[-1]["content"]]
    told = sorted(text.split('whose answer is "')[1].split('"')[0] for text in asked)
    # The person's own name is never an answer; "Span AB" is in two facts, asked for each.
    assert told == ["2020", "Malmö", "Span AB", "Span AB"]
    rows = [PromptRecord.model_validate(r) for r in load_jsonl(tmp_path / "augmented.jsonl")]
    # A question that holds its answer asks nothing: "Does Ada work at Span AB?" is kept only
    # where the answer is another.
    answers = {r.prompt: r.origin.rsplit("(", 1)[1].rstrip(")") for r in rows}
    assert set(answers) == {"Where does Ada work?", "Does Ada work at Span AB?"}
    assert all(answer not in prompt for prompt, answer in answers.items())
    assert all(r.fact and r.category == "question" for r in rows)


def test_edge_cases_come_from_the_bank_and_every_generator(tmp_path):
    proj = project(tmp_path)
    config = DataConfig(edge_per_category=3, languages=["sv", "de"])
    generators = [ListGenerator(), ListGenerator()]
    generators[1].name = "second-generator"
    report = edge_cases(proj, tmp_path / "edge.jsonl", generators, config)
    rows = [PromptRecord.model_validate(r) for r in load_jsonl(tmp_path / "edge.jsonl")]
    assert set(report.per_category) == {
        "injection",
        "vague",
        "out_of_scope",
        "private",
        "multilingual",
        "unanswerable",
        "greeting",
        "thanks",
        "question",
    } - {"multilingual"}
    assert all(n > 0 for n in report.per_category.values())
    generated = [r for r in rows if r.source == "edge"]
    assert {r.generator for r in generated} == {"fake-generator", "second-generator"}
    assert {r.category for r in generated} == {"vague", "out_of_scope", "private"}
    bank = [r for r in rows if r.source == "bank"]
    # English and the configured languages only; the person's first name filled in.
    assert {r.language for r in bank} == {None, "sv", "de"}
    assert all("{" not in r.prompt for r in bank)
    assert any("Ada" in r.prompt for r in bank if r.category == "private")
    # The bank's general questions about the person are answered by the teacher.
    assert {r.category for r in bank if r.origin == "bank: overview"} == {"question"}
    private_requests = [
        m[1]["content"]
        for g in generators
        for m in g.asked
        if "private information" in m[1]["content"]
    ]
    assert private_requests and all("My salary and my family." in t for t in private_requests)


def test_split_is_stratified_and_deterministic(tmp_path):
    rows = [
        {"id": f"{c}{i}", "category": c, "messages": []}
        for c, n in (("question", 20), ("private", 3), ("vague", 1))
        for i in range(n)
    ]
    write_jsonl(tmp_path / "r.jsonl", rows)
    report = split(tmp_path / "r.jsonl", tmp_path / "t.jsonl", tmp_path / "v.jsonl", 0.1, 0)
    assert report.per_category == {
        "private": {"train": 2, "val": 1},
        "question": {"train": 18, "val": 2},
        "vague": {"train": 1, "val": 0},
    }
    first = load_jsonl(tmp_path / "v.jsonl")
    split(tmp_path / "r.jsonl", tmp_path / "t.jsonl", tmp_path / "v.jsonl", 0.1, 0)
    assert load_jsonl(tmp_path / "v.jsonl") == first


def test_generated_answers_are_not_taken_for_questions():
    from minime.generation import looks_like_question

    assert looks_like_question("Mara works where?")
    assert looks_like_question("Tell me about tinyshade")
    assert not looks_like_question("Canopy is the firmware that runs on our controllers.")
    assert not looks_like_question("Lead a team of engineers.")


def test_a_question_written_about_a_fact_must_be_about_the_person():
    from minime.generation import usable_fact_question

    name = "Mara Lindqvist"
    assert usable_fact_question("Where does Mara work?", name, None)
    assert usable_fact_question("Which firm did Lindqvist join?", name, "en")
    assert usable_fact_question("When did she join Verdant Loop?", name, None)
    assert not usable_fact_question("What is the best time to harvest tomatoes?", name, None)
    assert not usable_fact_question("What does the firmware Canopy do?", name, None)
    assert not usable_fact_question("Where does Mara work? Tell me yours.", name, None)
    # Other languages have their own pronouns: there the question is not asked to name her.
    assert usable_fact_question("Wo arbeitet sie?", name, "de")


def test_facts_short_of_questions_are_topped_up(tmp_path):
    proj = project(tmp_path)
    collected = tmp_path / "collected.jsonl"
    write_jsonl(collected, [])

    class OneLine(ListGenerator):
        def stream(self, messages, params):
            self.calls += 1
            self.default = f"What about Ada's item {self.calls}?"
            return FakeTeacher.stream(self, messages, params)

    generator = OneLine()
    config = DataConfig(
        paraphrases=0, chains=0, questions_per_fact=2, translated_per_fact=0, questions_per_answer=0
    )
    augment(proj, collected, tmp_path / "augmented.jsonl", [generator], config)
    rows = [PromptRecord.model_validate(r) for r in load_jsonl(tmp_path / "augmented.jsonl")]
    per_fact = {f.text: sum(r.fact == f.text for r in rows) for f in profile_facts(PROFILE)}
    assert set(per_fact.values()) == {2}
    top_up_asks = [m[1]["content"] for m in generator.asked if "more questions" in m[1]["content"]]
    assert len(top_up_asks) == 3 and "What about Ada's item" in top_up_asks[-1]


def test_a_chain_the_generator_did_not_combine_is_joined():
    from minime.data.augment import _checked_chain

    parts = [
        PromptRecord.create("Where does Ada work?", "real"),
        PromptRecord.create("What does she build?", "real"),
    ]
    real = {p.id: p for p in parts}
    result = {"category": "chained", "origin": f"chain of {parts[0].id},{parts[1].id}"}
    joined = _checked_chain({**result, "prompts": ["Where does Ada work?"]}, real)["prompts"][0]
    assert "Where does Ada work?" in joined and "what does she build?" in joined
    statement = "Ada works at Span AB and builds steel bridges in Malmö and Lund."
    joined = _checked_chain({**result, "prompts": [statement]}, real)["prompts"][0]
    assert joined.startswith("Where does Ada work?")
    combined = "Where does Ada work, and what does she build there?"
    assert _checked_chain({**result, "prompts": [combined]}, real)["prompts"] == [combined]


def test_a_bare_greeting_is_not_a_fact():
    facts = profile_facts("Hola, soy Javier. I bake bread for a living in Seville.\n")
    assert [f.text for f in facts] == ["I bake bread for a living in Seville."]


def test_editing_one_fact_asks_again_only_about_that_fact(tmp_path):
    proj = project(tmp_path)
    collected = tmp_path / "collected.jsonl"
    write_jsonl(collected, [PromptRecord.create("Where does Ada work?", "real").model_dump()])
    config = DataConfig(paraphrases=2, chains=0, questions_per_fact=3, translated_per_fact=1)
    generator = ListGenerator()
    augment(proj, collected, tmp_path / "augmented.jsonl", [generator], config)
    asked = len(generator.asked)
    (tmp_path / "profile.md").write_text(PROFILE.replace("in 2020", "in 2021"))
    edited = Project.open(tmp_path)
    augment(edited, collected, tmp_path / "augmented.jsonl", [generator], config)
    # The edited fact is asked about again, in English, for each of its name and number,
    # and in one other language; the paraphrase and the other facts' questions are reused.
    again = [m[-1]["content"] for m in generator.asked[asked:]]
    assert len(again) == 4 and all("She joined Span AB in 2021." in text for text in again)


class PrivateGenerator(FakeTeacher):
    """Writes private questions, some about what the profile tells."""

    name = "private-generator"

    def stream(self, messages, params):
        asked = messages[-1]["content"]
        self.default = (
            "1. How much does Ada earn?\n2. Which bridges has Ada Example's team built?\n"
            "3. Does Ada have a family?\n4. Where is Ada's work?"
            if "private information" in asked
            else "1. Tell me more?"
        )
        return super().stream(messages, params)


def test_generated_private_questions_about_what_the_profile_tells_are_dropped(tmp_path):
    proj = project(tmp_path)
    config = DataConfig(edge_per_category=4, languages=[])
    edge_cases(proj, tmp_path / "edge.jsonl", [PrivateGenerator({})], config)
    rows = [PromptRecord.model_validate(r) for r in load_jsonl(tmp_path / "edge.jsonl")]
    private = {r.prompt for r in rows if r.source == "edge" and r.category == "private"}
    # "salary" and "family" are only in the "won't discuss" part; bridges and work are not.
    assert private == {"How much does Ada earn?", "Does Ada have a family?"}
