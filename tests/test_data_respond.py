"""Teacher answers: the check rejects planted wrong answers; retries, policy answers, drops."""

import json

import pytest

from minime.bank import fixed_answer
from minime.config import DataConfig
from minime.data.records import PromptRecord
from minime.data.respond import check_answer, respond, teacher_messages
from minime.jsonl import load_jsonl, write_jsonl
from minime.policy import is_refusal, unsupported_claims

from conftest import FakeTeacher


def record(prompt, category="question"):
    return PromptRecord.create(
        prompt, "edge" if category != "question" else "real", category=category
    )


@pytest.mark.parametrize(
    ("category", "prompt", "answer", "reason"),
    [
        # Speaking as the person instead of about them.
        ("question", "Where does Mara live?", "I live in Gothenburg.", "first_person"),
        ("multilingual", "Wo wohnt Mara?", "Ich wohne in Göteborg.", "first_person"),
        ("multilingual", "¿Dónde vive Mara?", "Vivo en Gotemburgo.", "first_person"),
        ("question", "What runs Canopy?", "Our controllers run Canopy.", "first_person"),
        # The profile's own line, copied: the person is not looking, not the assistant.
        ("question", "Is Mara looking for a job?", "I am not looking right now.", "first_person"),
        ("question", "Does Mara have pets?", "I have no pets.", "first_person"),
        (
            "question",
            "When did Mara join Verdant Loop?",
            "She joined in 2019.",
            "unsupported: 2019",
        ),
        (
            "question",
            "What food does Mara like?",
            "Mara loves Sushi from Tokyo.",
            "unsupported: Sushi, Tokyo",
        ),
        # A vague message is asked back, not answered.
        ("vague", "Is that good?", "Yes, that's good.", "no_question_back"),
        ("question", "Where does Mara work?", "", "empty"),
        ("question", "Where does Mara work?", "At Verdant Loop<|im_end|>", "template_tokens"),
    ],
)
def test_check_rejects_planted_wrong_answers(example_project, category, prompt, answer, reason):
    assert check_answer(example_project, record(prompt, category), answer, "stop") == reason


def test_check_rejects_a_restatement_in_the_persons_voice(example_project):
    """The fact quoted in a restatement's prompt does not make its "our" the visitor's."""
    from minime.data.respond import RESTATE

    fact = "Our climate controllers run in about 140 greenhouses."
    prompt = RESTATE["en"].format(first="Mara", fact=fact)
    statement = PromptRecord.create(prompt, "profile", fact=fact)
    assert check_answer(example_project, statement, fact, "stop") == "first_person"
    said = "Mara's climate controllers run in about 140 greenhouses."
    assert check_answer(example_project, statement, said, "stop") == ""


def test_check_rejects_a_cut_off_answer(example_project):
    reason = check_answer(example_project, record("Where does Mara work?"), "At Verdant", "length")
    assert reason == "cut_off"


@pytest.mark.parametrize(
    ("category", "prompt", "answer"),
    [
        (
            "question",
            "Where does Mara work?",
            "Mara works at Verdant Loop in Gothenburg since 2022.",
        ),
        ("question", "How many stars does tinyshade have?", "About 1,200 stars on GitHub."),
        ("question", "Does Mara have a driving licence?", "I don't know: the profile doesn't say."),
        ("question", "Does Mara own a car?", "I'm not sure: the profile doesn't say."),
        ("question", "Does Mara own a boat?", "I have no information about that."),
        ("vague", "Tell me more.", "What would you like to know about Mara's work?"),
        # The visitor's "our" is theirs.
        ("question", "Would Mara speak at our meetup?", "Yes, Mara would speak at our meetup."),
    ],
)
def test_check_accepts_good_answers(example_project, category, prompt, answer):
    assert check_answer(example_project, record(prompt, category), answer, "stop") == ""


def test_judge_catches_what_patterns_cannot(example_project):
    judge = FakeTeacher({}, default="UNSUPPORTED")
    question = record("Does Mara have a driving licence?")
    answer = "Yes, Mara has a driving licence."
    assert check_answer(example_project, question, answer, "stop") == ""
    assert check_answer(example_project, question, answer, "stop", judge) == "judge: unsupported"
    shown = judge.asked[0][0]["content"]
    assert example_project.profile in shown and "UNSUPPORTED" in shown


def test_policy_patterns():
    assert is_refusal("Lo siento, no puedo compartir eso.")
    assert not is_refusal("Mara works at Verdant Loop.")
    assert unsupported_claims("She was born in 1990.", "Mara, 2016") == ["1990"]


def test_teacher_sees_profile_fact_and_voice_student_rows_do_not(example_project):
    fact = "I live in Gothenburg."
    question = PromptRecord.create("Var bor Mara?", "profile", fact=fact, language="sv")
    question = question.model_copy(update={"category": "multilingual"})
    system = teacher_messages(example_project, question)[0]["content"]
    assert example_project.profile in system
    assert f'"{fact}"' in system and "third person" in system and "Answer in Swedish" in system
    assert teacher_messages(example_project, question)[1] == {
        "role": "user",
        "content": "Var bor Mara?",
    }


def test_a_number_from_another_fact_is_rejected(example_project):
    fact = "I joined Verdant Loop in March 2022. I lead a team of four engineers."
    question = PromptRecord.create("When did Mara join Verdant Loop?", "profile", fact=fact)
    answer = "She joined in 2018."  # in the profile (Nordhavn Marine), not in this fact
    assert check_answer(example_project, question, answer, "stop") == "unsupported: 2018"


def test_an_answer_in_the_wrong_language_is_rejected(example_project):
    question = PromptRecord.create(
        "Var jobbar Mara?", "edge", category="multilingual", language="sv"
    )
    answer = "Mara works at Verdant Loop in Gothenburg, Sweden."
    assert check_answer(example_project, question, answer, "stop") == "wrong_language: en"


def test_respond_retries_replaces_and_drops(example_project, tmp_path):
    prompts = [
        record("Where does Mara work?"),
        record("When did Mara join Verdant Loop?"),
        record("How old is Mara?", "private"),
        record("What is Mara's favourite food?"),
    ]
    src = tmp_path / "deduped.jsonl"
    write_jsonl(src, (p.model_dump() for p in prompts))
    teacher = FakeTeacher(
        {
            "Where does Mara work?": ["Mara works at Verdant Loop."],
            "When did Mara join Verdant Loop?": ["In 2019.", "She joined in March 2022."],
            "How old is Mara?": ["She is 30.", "Mara is 30 years old."],
            "What is Mara's favourite food?": ["Sushi from Tokyo.", "Pasta from Rome."],
        }
    )
    dst = tmp_path / "responses.jsonl"
    report = respond(example_project, src, dst, teacher, DataConfig(judge=False))
    assert (report.accepted_first_try, report.accepted_after_retry) == (1, 1)
    assert (report.fixed_answers, report.dropped) == (1, 1)
    assert report.rejections == {"unsupported": 2}
    # A prompt that must be declined gets the fixed answer: the teacher is never asked.
    assert not any(m[-1]["content"] == "How old is Mara?" for m in teacher.asked)
    rows = {row["messages"][0]["content"]: row for row in load_jsonl(dst)}
    assert set(rows) == {
        "Where does Mara work?",
        "When did Mara join Verdant Loop?",
        "How old is Mara?",
    }
    assert rows["When did Mara join Verdant Loop?"]["messages"][1]["content"] == (
        "She joined in March 2022."
    )
    private = rows["How old is Mara?"]
    assert private["messages"][1]["content"] == fixed_answer("private", None, "Mara Lindqvist")
    assert private["teacher"] == "policy"
    # Student rows carry no profile: just the visitor's turn and the answer.
    assert [m["role"] for m in private["messages"]] == ["user", "assistant"]
    # The retry prompt asks for more care than the first one.
    assert "copy names and numbers exactly" in teacher.asked[-1][0]["content"]
    json.dumps(rows)  # rows are plain JSON


def test_declining_a_question_about_a_profile_fact_is_rejected(example_project):
    fact = "I live in Gothenburg."
    question = PromptRecord.create("Which city is Mara based in?", "profile", fact=fact)
    answer = "I don't know: the profile doesn't say."
    assert check_answer(example_project, question, answer, "stop") == "refused_answerable"
    retry = teacher_messages(example_project, question, retry=True)[0]["content"]
    assert f'The profile answers this with: "{fact}"' in retry and "Use only facts" in retry


def test_an_answer_that_states_another_fact_instead_is_rejected(example_project):
    fact = "I run the Gothenburg Half Marathon every May."
    question = PromptRecord.create("Does Mara do any sport?", "profile", fact=fact)
    overview = "Mara is a senior embedded software engineer at Verdant Loop in Gothenburg."
    assert check_answer(example_project, question, overview, "stop") == "off_fact"
    assert check_answer(example_project, question, "Mara likes sports.", "stop") == "off_fact"
    right = "Yes: Mara runs the Gothenburg Half Marathon every May."
    assert check_answer(example_project, question, right, "stop") == ""
    # Words cannot be compared across languages: there only names and numbers are checked.
    german = PromptRecord.create(
        "Treibt Mara Sport?", "profile", category="multilingual", language="de", fact=fact
    )
    assert check_answer(example_project, german, "Mara läuft jeden Mai.", "stop") == ""


def test_a_restatement_keeps_the_facts_numbers_and_most_of_its_words():
    from minime.data.respond import _restates

    fact = "I joined Verdant Loop in March 2022. I lead a team of four engineers."
    name = "Mara Lindqvist"
    assert _restates(
        fact, None, "Mara joined Verdant Loop in March 2022 and leads four engineers.", name
    )
    assert not _restates(fact, None, "Mara joined Verdant Loop in March.", name)
    assert not _restates(fact, None, "Mara Lindqvist is an engineer since 2022.", name)
    assert _restates(fact, "de", "Mara kam im März 2022 zu Verdant Loop.", name)


def test_capitalised_nouns_are_not_names_outside_english(example_project):
    question = PromptRecord.create(
        "Wo arbeitet Mara?", "edge", category="multilingual", language="de"
    )
    answer = "Mara arbeitet bei Verdant Loop als Ingenieurin für Gewächshäuser."
    assert check_answer(example_project, question, answer, "stop") == ""


def test_rerun_answers_only_new_prompts(example_project, tmp_path):
    src, dst = tmp_path / "deduped.jsonl", tmp_path / "responses.jsonl"
    first = [record("Where does Mara work?"), record("What is Canopy?")]
    write_jsonl(src, (p.model_dump() for p in first))
    teacher = FakeTeacher({}, default="Mara works at Verdant Loop.")
    respond(example_project, src, dst, teacher, DataConfig(judge=False))
    assert len(teacher.asked) == 2
    write_jsonl(src, (p.model_dump() for p in [*first, record("Where is Mara based?")]))
    report = respond(example_project, src, dst, teacher, DataConfig(judge=False))
    assert len(teacher.asked) == 3
    assert report.rows == len(load_jsonl(dst)) == 3


def test_http_teachers_get_concurrent_requests(example_project, tmp_path, scripted_server):
    import threading

    from minime.backends.openai_http import OpenAIBackend

    from conftest import Scripted, chat_completion_body

    in_flight, peak, lock = [0], [0], threading.Lock()
    original = OpenAIBackend.complete

    def counting(self, messages, params):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return original(self, messages, params)
        finally:
            with lock:
                in_flight[0] -= 1

    scripted_server.default = Scripted(
        200, chat_completion_body("Mara works at Verdant Loop."), delay=0.2
    )
    teacher = OpenAIBackend(scripted_server.url, "fake")
    teacher.complete = counting.__get__(teacher)
    src = tmp_path / "deduped.jsonl"
    write_jsonl(src, (record(f"Where does Mara work? {i}").model_dump() for i in range(8)))
    report = respond(
        example_project, src, tmp_path / "r.jsonl", teacher, DataConfig(judge=False, concurrency=4)
    )
    assert report.rows == 8
    # Four requests were in flight at once (a wall-clock bound would fail on a busy machine).
    assert peak[0] == 4


def test_questions_about_a_fact_get_its_checked_restatement(example_project, tmp_path):
    from minime.data.respond import RESTATE

    lives = "I live in Gothenburg."
    joined = "I joined Verdant Loop in March 2022. I lead a team of four engineers."
    prompts = [
        PromptRecord.create("Where does Mara live?", "profile", fact=lives),
        PromptRecord.create("Which city is Mara's home?", "profile", fact=lives),
        PromptRecord.create("When did Mara start at Verdant Loop?", "profile", fact=joined),
    ]
    src = tmp_path / "deduped.jsonl"
    write_jsonl(src, (p.model_dump() for p in prompts))
    restate = RESTATE["en"].format(first="Mara", fact=lives)
    teacher = FakeTeacher(
        # Tasks run in id order; the restatement of `joined` first drops its year, so it
        # fails both tries and its question is answered on its own.
        {
            restate: ["I live in Gothenburg.", "Mara lives in Gothenburg."],
            "When did Mara start at Verdant Loop?": ["Mara joined Verdant Loop in March 2022."],
        },
        default="Mara leads a team at Verdant Loop.",
    )
    dst = tmp_path / "responses.jsonl"
    report = respond(example_project, src, dst, teacher, DataConfig(judge=False))
    rows = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in load_jsonl(dst)}
    restated = {rows["Where does Mara live?"], rows["Which city is Mara's home?"]}
    assert len(restated) == 1 and report.answered_by_statement == 2
    assert report.facts_restated == 1
    assert rows["When did Mara start at Verdant Loop?"] == "Mara joined Verdant Loop in March 2022."
    # The teacher was shown the fact it restates.
    shown = [m[0]["content"] for m in teacher.asked if m[-1]["content"] == restate]
    assert any(f'"{lives}"' in system for system in shown)


def test_editing_one_fact_restates_only_that_fact(tmp_path):
    from minime.project import Project

    from conftest import EXAMPLE

    (tmp_path / "profile.md").write_text((EXAMPLE / "profile.md").read_text())
    (tmp_path / "minime.yaml").write_text("name: Mara Lindqvist\n")
    lives = "I live in Gothenburg."
    assert lives in (tmp_path / "profile.md").read_text()
    src, dst = tmp_path / "deduped.jsonl", tmp_path / "responses.jsonl"
    prompts = [
        PromptRecord.create("Where does Mara live?", "profile", fact=lives),
        record("What can you tell me about Mara?"),
    ]
    write_jsonl(src, (p.model_dump() for p in prompts))
    teacher = FakeTeacher({}, default="Mara lives in Gothenburg.")
    respond(Project.open(tmp_path), src, dst, teacher, DataConfig(judge=False))
    asked = len(teacher.asked)
    # An edit elsewhere in the profile: the fact's restatement is reused; the question
    # about no particular fact, whose answer may use any line, is asked again.
    profile = (tmp_path / "profile.md").read_text()
    (tmp_path / "profile.md").write_text(profile + "\n- I collect fountain pens.\n")
    report = respond(Project.open(tmp_path), src, dst, teacher, DataConfig(judge=False))
    again = [m[-1]["content"] for m in teacher.asked[asked:]]
    assert again == ["What can you tell me about Mara?"]
    assert report.answered_by_statement == 1


class VerdictTeacher(FakeTeacher):
    """Restates every fact; asked whether a fact (or the whole profile) answers a question,
    gives its Yes and No as log-probs of the first token: No for the questions in
    `unanswered` (those of them in `in_profile`: Yes when asked of the whole profile)."""

    def __init__(
        self, unanswered: set[str], answer: str, in_profile: frozenset[str] = frozenset()
    ) -> None:
        super().__init__({}, default=answer)
        self.unanswered, self.in_profile = unanswered, in_profile

    def stream(self, messages, params):
        from minime.backends.base import Delta, TokenLogprobs, TopLogprob, Usage

        asked = messages[-1]["content"]
        if not asked.startswith(("Statement about", "Profile of")):
            yield from super().stream(messages, params)
            return
        self.asked.append(messages)
        no = any(f"Question: {q}\n" in asked for q in self.unanswered)
        if asked.startswith("Profile of"):
            no = no and not any(f"Question: {q}\n" in asked for q in self.in_profile)
        yes_no = (-2.3, -0.1) if no else (-0.1, -2.3)
        top = (TopLogprob("Yes", yes_no[0]), TopLogprob(" No", yes_no[1]))
        first = top[1] if no else top[0]
        yield Delta(text=first.token, tokens=(TokenLogprobs(first.token, first.logprob, top=top),))
        yield Delta(text="", finish_reason="stop", usage=Usage(10, 1))


def test_questions_their_fact_does_not_answer_are_left_out_or_made_near_misses(
    example_project, tmp_path
):
    cat = "I have a cat called Pixel."
    prompts = [
        PromptRecord.create("What is Mara's cat called?", "profile", fact=cat),
        PromptRecord.create("How old is Mara's cat?", "profile", fact=cat),
        PromptRecord.create("Where does the cat's owner live?", "profile", fact=cat),
    ]
    src, dst = tmp_path / "deduped.jsonl", tmp_path / "responses.jsonl"
    write_jsonl(src, (p.model_dump() for p in prompts))
    teacher = VerdictTeacher(
        {p.prompt for p in prompts[1:]},
        "Mara has a cat called Pixel.",
        in_profile={"Where does the cat's owner live?"},
    )
    report = respond(example_project, src, dst, teacher, DataConfig(judge=False))
    rows = {row["messages"][0]["content"]: row for row in load_jsonl(dst)}
    # Answered by its fact: the restatement. Answered by no fact, asked in English, and not
    # by the profile either: the fixed "I don't know", as an unanswerable row about no fact.
    # Answered elsewhere in the profile: left out.
    assert set(rows) == {"What is Mara's cat called?", "How old is Mara's cat?"}
    near_miss = rows["How old is Mara's cat?"]
    assert near_miss["category"] == "unanswerable" and near_miss["fact"] is None
    decline = fixed_answer("unanswerable", None, example_project.name)
    assert near_miss["messages"][1]["content"] == decline
    assert report.not_answered_by_fact == 2 and report.near_misses == 1
    assert report.answered_by_statement == 1
    # The verdicts are kept: a rerun asks nothing again.
    asked = len(teacher.asked)
    respond(example_project, src, dst, teacher, DataConfig(judge=False))
    assert len(teacher.asked) == asked


def test_near_misses_are_few_per_fact(example_project, tmp_path):
    from minime.data.respond import NEAR_MISSES_PER_FACT

    cat = "I have a cat called Pixel."
    asked = [f"What is Mara's cat's favourite {thing}?" for thing in ("toy", "food", "game")]
    prompts = [PromptRecord.create(question, "profile", fact=cat) for question in asked]
    src, dst = tmp_path / "deduped.jsonl", tmp_path / "responses.jsonl"
    write_jsonl(src, (p.model_dump() for p in prompts))
    teacher = VerdictTeacher(set(asked), "Mara has a cat called Pixel.")
    report = respond(example_project, src, dst, teacher, DataConfig(judge=False))
    assert report.not_answered_by_fact == 3
    assert report.near_misses == len(load_jsonl(dst)) == NEAR_MISSES_PER_FACT == 2


@pytest.mark.parametrize(
    ("reply", "answers"), [("No, it does not.", False), ("Yes.", True), ("Maybe.", True)]
)
def test_a_verdict_without_log_probs_is_read_from_its_text(reply, answers):
    from minime.backends import SamplingParams
    from minime.data.respond import _verdict

    messages = [{"role": "user", "content": "Statement about Mara: ..."}]
    verdict = _verdict(FakeTeacher({}, default=reply), messages, SamplingParams(max_tokens=1))
    assert verdict == {"answers": answers}
