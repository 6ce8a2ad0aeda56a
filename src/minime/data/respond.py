"""Step 5 of `minime data`: every kept prompt gets its answer, and every teacher answer is checked.

Prompts that must be declined (private, out of scope, injection), that the profile cannot
answer (unanswerable), and greetings and thanks get the fixed answer of their category and
language from `minime.bank`: short and always worded the same, so that a small student
learns them exactly. The rest go to the teacher, which has the profile in its context and
follows the `minime chat` policy, plus an instruction for the prompt's category and, for a
question written about one profile fact, that fact. For each answer token its top-k
log-probs (ids and strings) are kept for distillation.

Nothing the teacher writes enters the training set unchecked: an answer is rejected when it
is empty, cut off, leaks template tokens, declines a question its fact answers, speaks as
the person ("I live in ..."), is in another language than the question, states a
number or name that the profile (for a number asked about one fact: that fact) does not
have, or, for an English question about one fact, states another fact instead (the
overview a 1.5B teacher gives for any question). A question to be answered by its fact's
restatement is first put to the teacher: does the fact answer it? A No leaves it out. An
optional judge pass (the teacher, shown the profile) catches unsupported claims that have
neither. A rejected answer is generated once more with a stricter instruction; if that
fails too, the prompt is dropped (replacing it with "I don't know" would teach the student
to refuse answerable questions).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache, partial
from pathlib import Path

from pydantic import BaseModel

from minime.backends import ChatBackend, Completion, SamplingParams
from minime.bank import TEMPLATE_CATEGORIES, first_name, fixed_answer
from minime.chat import system_prompt
from minime.config import DataConfig
from minime.data.fact_match import FactMatchReport, match_facts
from minime.data.records import PromptRecord, read_records, record_id
from minime.generation import profile_facts
from minime.jsonl import write_jsonl
from minime.language import LANGUAGE_NAMES, identify, is_english, names_in
from minime.policy import TEMPLATE_TOKEN, is_refusal, speaks_as_person, unsupported_claims
from minime.project import Project
from minime.recall import matched_terms, states_other_fact, terms
from minime.tasks import run_tasks, task_key, work_file, worker_count

CATEGORY_INSTRUCTIONS = {
    "question": "",
    "chained": "The visitor asks several things at once: answer every part.",
    "vague": "The message is vague: ask the visitor, in one short sentence, what exactly they "
    "want to know about {first}.",
    "multilingual": "Answer in {language}, the language of the visitor's message.",
}

#: Said to the teacher for every answer: one voice, short, nothing beyond the profile.
VOICE = (
    "Speak about {first} in the third person (never as {first}: not 'I' or 'my'), in one or "
    "two sentences, and answer only what was asked."
)
FACT_HINT = (
    'The profile answers this with: "{fact}". Copy names and numbers exactly as written there.'
)
#: The version of `check_answer`'s rules, in every check's task id: raised when they change,
#: so that answers checked by older rules are checked again.
CHECK_RULES = 4
#: Share of an English fact's words its restatement must keep.
RESTATEMENT_MIN_SHARE = 0.5
STRICTER = " Use only facts written in the profile and copy names and numbers exactly from it."
#: The visitor turn of a fact's restatement, per language: the fact itself, to be said again
#: about the person. Asked in English, a 1.5B teacher answers in English whatever it is told;
#: asked what "the profile says" it answers "Javier's profile states that ..."; and asked to
#: "tell this" with the fact only in the system prompt, it wrote an overview of the person
#: in other languages ("Javier ist ein Bäcker und Schriftsteller ...") instead of the fact.
RESTATE = {
    "en": 'Say this about {first} in one or two sentences: "{fact}"',
    "sv": 'Säg det här om {first} på svenska, med en eller två meningar: "{fact}"',
    "de": 'Sag das über {first} auf Deutsch, in ein oder zwei Sätzen: "{fact}"',
    "es": 'Di esto sobre {first} en español, en una o dos frases: "{fact}"',
    "fr": 'Dis cela sur {first} en français, en une ou deux phrases : "{fact}"',
}

JUDGE_SYSTEM = """\
You check answers written by {name}'s website assistant. The assistant may only state \
facts written in {name}'s profile. Reply with one word: SUPPORTED if every claim about \
{name} in the answer is written in the profile (or the answer declines or says it does \
not know), UNSUPPORTED if the answer states anything about {name} that the profile does \
not say.

Profile of {name}:
\"\"\"
{profile}
\"\"\""""


#: Asked of the teacher for each question answered by its fact's restatement. A 1.5B
#: generator asked for questions about a fact also asks what it does not say ("What age is
#: her cat?" for "I have a cat called Pixel."); answered with the restatement, such a
#: question teaches the student to answer anything with some fact.
ANSWERS_QUESTION = (
    'Statement about {first}: "{fact}"\nQuestion: {question}\nDoes the statement give the '
    "answer to this question, so that someone who reads only the statement knows it? Reply "
    "Yes or No."
)
#: Asked of the teacher, with the whole profile, for each English question its fact does
#: not answer: one the profile does not answer either becomes an unanswerable row, a near
#: miss beside the answerable questions on the same topic ("What breed is her cat?" beside
#: "What is her cat called?"), which teaches the student to say it does not know instead of
#: answering with the nearest fact.
PROFILE_ANSWERS_QUESTION = (
    'Profile of {name}:\n"""\n{profile}\n"""\n\nQuestion: {question}\nDoes the profile give '
    "the answer to this question, so that someone who reads only the profile knows it? Reply "
    "Yes or No."
)
#: The share of Yes (of Yes and No) under which the profile is taken not to answer a question.
#: The 1.5B teacher leans to Yes: on 60 of the example persona's questions that their fact
#: does not answer, a bar of 0.7 kept 37 as near misses, of which 3 read as answerable by
#: hand; at 0.5 it kept 13.
NEAR_MISS_MIN_YES = 0.7
#: Near misses kept per fact in one call: the generator asks many things a fact does not say
#: about the same topic (9 about the example persona's cat), and as many "I don't know"s
#: taught the student to decline "What is her cat called?" too.
NEAR_MISSES_PER_FACT = 2
#: The two Yes/No checks: the task kind (in each task's id), the work file that keeps their
#: answers (`<stem>.<name>.jsonl`) and the progress label.
_FACT_CHECK = ("answers", "answerable", "checking fact questions")
_PROFILE_CHECK = ("profile-answers", "near-misses", "checking near misses")


class RespondReport(BaseModel):
    """What happened to the teacher's answers."""

    prompts: int
    fact_questions: FactMatchReport
    facts_restated: int
    #: Questions whose fact, the teacher says, does not answer them: left out.
    not_answered_by_fact: int
    near_misses: int = 0
    answered_by_statement: int
    accepted_first_try: int
    accepted_after_retry: int
    fixed_answers: int
    dropped: int
    rejections: dict[str, int]
    retry_rejections: dict[str, int]
    rows: int


def respond(
    project: Project,
    src: Path,
    dst: Path,
    teacher: ChatBackend,
    config: DataConfig,
    judge: ChatBackend | None = None,
    embedder: str | None = None,
) -> RespondReport:
    """Answer every prompt of `src` with the teacher, check each answer, write `dst`.

    With an `embedder`, each generated question is first checked to be about the fact it
    was written for (`fact_match`): moved to its nearest fact or dropped where it is not.

    Work is kept beside `dst` (`<stem>.answers.jsonl`, `.answers-checks.jsonl`,
    `.retries.jsonl`, `.retries-checks.jsonl`), resumable task by task; a task's id covers
    everything it depends on (prompt, profile, teacher, sampling), so a changed input is
    answered again and an unchanged one never twice.
    """
    _, records = read_records(src)
    prompts = len(records)
    # Same-category prompts share a system prompt, so llama.cpp reuses its KV cache.
    records.sort(key=lambda r: (r.category, r.id))
    fixed = [r for r in records if r.category in TEMPLATE_CATEGORIES]
    records = [r for r in records if r.category not in TEMPLATE_CATEGORIES]
    matched = FactMatchReport()
    if embedder:
        facts = [f.text for f in profile_facts(project.profile)]
        records, matched = match_facts(records, facts, project.name, embedder)
    params = SamplingParams(
        temperature=0.3,
        top_p=0.95,
        max_tokens=config.answer_max_tokens,
        logprobs=config.logprobs,
        seed=config.seed,
    )
    judge = judge if config.judge else None
    statements = _statements(project, records, teacher, judge, params, dst, config.concurrency)
    by_statement = [r for r in records if _statement_key(r) in statements]
    records = [r for r in records if _statement_key(r) not in statements]
    answered = _answered_by_fact(project, by_statement, teacher, dst, config.concurrency)
    unanswered = [r for r in by_statement if r not in answered]
    near_misses = _near_misses(project, unanswered, teacher, dst, config.concurrency)
    fixed += near_misses
    by_statement = answered
    first = _attempt(
        project, records, teacher, judge, params, dst, "answers", False, config.concurrency
    )
    rejected = [r for r in records if first[r.id][1]]
    retry_params = params.model_copy(update={"temperature": 0.7})
    second = _attempt(
        project, rejected, teacher, judge, retry_params, dst, "retries", True, config.concurrency
    )

    rows, outcome = [], Counter()
    for record in fixed:
        answer = fixed_answer(record.category, record.language, project.name)
        rows.append(_row(record, {"answer": answer, "logprobs": None}, "policy"))
        outcome["policy"] += 1
    for record in by_statement:
        rows.append(_row(record, statements[_statement_key(record)], teacher.name))
        outcome["statement"] += 1
    reasons = Counter(first[r.id][1].split(":")[0] for r in rejected)
    retry_reasons = Counter(second[r.id][1].split(":")[0] for r in rejected if second[r.id][1])
    for record in records:
        if not first[record.id][1]:
            rows.append(_row(record, first[record.id][0], teacher.name))
            outcome["first"] += 1
        elif not second[record.id][1]:
            rows.append(_row(record, second[record.id][0], teacher.name))
            outcome["retry"] += 1
        else:
            outcome["dropped"] += 1
    write_jsonl(dst, rows)
    return RespondReport(
        prompts=prompts,
        fact_questions=matched,
        facts_restated=len(statements),
        not_answered_by_fact=len(unanswered),
        near_misses=len(near_misses),
        answered_by_statement=outcome["statement"],
        accepted_first_try=outcome["first"],
        accepted_after_retry=outcome["retry"],
        fixed_answers=outcome["policy"],
        dropped=outcome["dropped"],
        rejections=dict(reasons),
        retry_rejections=dict(retry_reasons),
        rows=len(rows),
    )


def _statement_key(record: PromptRecord) -> tuple[str, str | None] | None:
    """The (fact, language) whose restatement answers `record`, for a question about a fact."""
    if record.fact and record.category in ("question", "multilingual"):
        return record.fact, record.language
    return None


def _statements(
    project: Project,
    records: list[PromptRecord],
    teacher: ChatBackend,
    judge: ChatBackend | None,
    params: SamplingParams,
    dst: Path,
    concurrency: int,
) -> dict[tuple[str, str | None], dict]:
    """The teacher's checked restatement of each fact asked about, per language asked in.

    Every question written about one fact gets that fact's restatement as its answer: the
    same facts in the same words across many phrasings is what a small student can learn
    (fact-based beats token-based data), a 1.5B teacher answering each phrasing on its own
    contradicted the profile ("No, he did not work in France"), and it costs one teacher
    call per fact instead of one per question. A restatement must keep every number of its
    fact; a fact whose restatement fails twice has its questions answered one by one.
    """
    first = first_name(project.name)
    pseudo = {}
    for record in records:
        key = _statement_key(record)
        if key and key not in pseudo:
            fact, language = key
            pseudo[key] = PromptRecord(
                id=record_id(f"statement {language or 'en'}", fact),
                prompt=RESTATE.get(language or "en", RESTATE["en"]).format(first=first, fact=fact),
                category="multilingual" if language else "question",
                source="profile",
                fact=fact,
                language=language,
            )
    chosen: dict[tuple[str, str | None], dict] = {}
    todo = list(pseudo.items())
    for name, retry, sampling in (
        ("statements", False, params),
        ("statement-retries", True, params.model_copy(update={"temperature": 0.7})),
    ):
        results = _attempt(
            project, [r for _, r in todo], teacher, judge, sampling, dst, name, retry, concurrency
        )
        for key, record in todo:
            answer, reason = results[record.id]
            if not reason and _restates(key[0], key[1], answer["answer"], project.name):
                chosen[key] = answer
        todo = [(key, record) for key, record in todo if key not in chosen]
    return chosen


def _answered_by_fact(
    project: Project,
    records: list[PromptRecord],
    teacher: ChatBackend,
    dst: Path,
    concurrency: int,
) -> list[PromptRecord]:
    """The questions of `records` that their fact answers, by the teacher's Yes or No
    (`ANSWERS_QUESTION`): one token, read from its log-probs where the backend gives them."""
    first = first_name(project.name)
    questions = {
        r.id: ANSWERS_QUESTION.format(first=first, fact=r.fact, question=r.prompt) for r in records
    }
    answers = _ask_yes_no(teacher, questions, 0.5, _FACT_CHECK, dst, concurrency)
    return [r for r in records if answers[r.id]]


def _near_misses(
    project: Project,
    records: list[PromptRecord],
    teacher: ChatBackend,
    dst: Path,
    concurrency: int,
) -> list[PromptRecord]:
    """The English questions of `records` that the whole profile does not answer either
    (`PROFILE_ANSWERS_QUESTION`), as unanswerable prompts about no fact, at most
    `NEAR_MISSES_PER_FACT` of each fact's."""
    records = [r for r in records if is_english(r.language)]
    profile = project.profile.strip()
    questions = {
        r.id: PROFILE_ANSWERS_QUESTION.format(name=project.name, profile=profile, question=r.prompt)
        for r in records
    }
    answers = _ask_yes_no(teacher, questions, NEAR_MISS_MIN_YES, _PROFILE_CHECK, dst, concurrency)
    kept = Counter()
    near_misses = []
    for record in records:
        if not answers[record.id] and kept[record.fact] < NEAR_MISSES_PER_FACT:
            kept[record.fact] += 1
            near_misses.append(record.model_copy(update={"category": "unanswerable", "fact": None}))
    return near_misses


def _ask_yes_no(
    teacher: ChatBackend,
    questions: dict[str, str],
    min_yes: float,
    work: tuple[str, str, str],
    dst: Path,
    concurrency: int,
) -> dict[str, bool]:
    """The teacher's Yes (True) or No to each of `questions` (by id), one token each, for
    the check `work` (`_FACT_CHECK` or `_PROFILE_CHECK`)."""
    kind, name, label = work
    params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=5)
    keys, jobs = {}, []
    for id_, content in questions.items():
        messages = [{"role": "user", "content": content}]
        keys[id_] = task_key(kind, teacher.name, messages, params.model_dump_json(), min_yes)
        jobs.append((keys[id_], partial(_verdict, teacher, messages, params, min_yes)))
    workers = worker_count(concurrency, [teacher])
    verdicts = run_tasks(work_file(dst, name), jobs, label, workers)
    return {id_: verdicts[key]["answers"] for id_, key in keys.items()}


def _verdict(
    teacher: ChatBackend, messages: list[dict], params: SamplingParams, min_yes: float = 0.5
) -> dict:
    """{"answers": bool}: Yes when the teacher's Yes is at least `min_yes` of its Yes and No
    (or, without log-probs, unless its reply starts with No), so a doubtful question at the
    0.5 bar is kept."""
    completion = teacher.complete(messages, params)
    weight = Counter()
    for candidate in completion.tokens[0].top if completion.tokens else ():
        word = candidate.token.strip().lower()
        if word in ("yes", "no"):
            weight[word] += math.exp(candidate.logprob)
    if weight:
        return {"answers": weight["yes"] >= min_yes * (weight["yes"] + weight["no"])}
    return {"answers": not completion.text.strip().lower().startswith("no")}


def _restates(fact: str, language: str | None, answer: str, name: str) -> bool:
    """Whether `answer` restates `fact`: it keeps every number and, in English, at least
    RESTATEMENT_MIN_SHARE of the fact's words (other languages share only its names)."""
    if not all(number in answer for number in re.findall(r"\d+(?:[.,:]\d+)*", fact)):
        return False
    if not is_english(language):
        return True
    return matched_terms(answer, fact, frozenset(terms(name)))[1] >= RESTATEMENT_MIN_SHARE


def _attempt(
    project: Project,
    records: list[PromptRecord],
    teacher: ChatBackend,
    judge: ChatBackend | None,
    params: SamplingParams,
    dst: Path,
    name: str,
    retry: bool,
    concurrency: int,
) -> dict[str, tuple[dict, str]]:
    """Answer `records` (first try or retry), then check every answer: id -> (answer, reason).

    All answers come before all checks, so the teacher's and the judge's system prompts
    each stay in the KV cache for a whole pass.
    """
    keys, jobs = {}, []
    for record in records:
        messages = teacher_messages(project, record, retry)
        covered = _answer_depends_on(project, record, messages)
        keys[record.id] = task_key(record.id, teacher.name, covered, params.model_dump_json())
        jobs.append((keys[record.id], partial(_answer, teacher, messages, params)))
    workers = worker_count(concurrency, [teacher])
    answers = run_tasks(work_file(dst, name), jobs, f"teacher {name}", workers)
    check_keys, check_jobs = {}, []
    for record in records:
        answer = answers[keys[record.id]]
        check_keys[record.id] = check_key(project, keys[record.id], judge.name if judge else None)
        job = partial(_check, project, judge, record, answer["answer"], answer["finish_reason"])
        check_jobs.append((check_keys[record.id], job))
    workers = worker_count(concurrency, [judge] if judge is not None else [])
    checks = run_tasks(work_file(dst, f"{name}-checks"), check_jobs, f"checking {name}", workers)
    return {r.id: (answers[keys[r.id]], checks[check_keys[r.id]]["reason"]) for r in records}


def _answer_depends_on(project: Project, record: PromptRecord, messages: list[dict]):
    """What an answer's task id covers: its whole conversation, except that for a question
    about one fact (and that fact's restatement) the rest of the profile is left out. So an
    edit of one line of the profile asks the teacher again only about the facts it changed;
    every answer is still checked against the new profile (`check_key`)."""
    if not record.fact:
        return messages
    profile = project.profile.strip()
    return [{**m, "content": m["content"].replace(profile, "")} for m in messages]


def check_key(project: Project, answer_key: str, judge: str | None) -> str:
    """The task id of an answer's check: the answer, the judge, the profile it checks against
    and the version of the rules (CHECK_RULES)."""
    return task_key(answer_key, judge, project.profile, CHECK_RULES)


def teacher_messages(project: Project, record: PromptRecord, retry: bool = False) -> list[dict]:
    """The teacher's conversation: chat policy + profile + instructions, then the prompt.

    The instructions: the prompt's category, the voice, and for a question written about one
    profile fact, that fact; a retry after a rejected answer adds a stricter instruction.
    """
    system = system_prompt(project.name, project.profile)
    first = first_name(project.name)
    language = LANGUAGE_NAMES.get(record.language or "", record.language)
    parts = [
        CATEGORY_INSTRUCTIONS[record.category].format(first=first, language=language),
        VOICE.format(first=first),
    ]
    if record.fact:
        parts.append(FACT_HINT.format(fact=record.fact))
    if retry:
        parts.append(STRICTER.strip())
    system += "\n\n" + " ".join(p for p in parts if p)
    return [{"role": "system", "content": system}, {"role": "user", "content": record.prompt}]


def check_answer(
    project: Project,
    record: PromptRecord,
    answer: str,
    finish_reason: str,
    judge: ChatBackend | None = None,
) -> str:
    """Why an answer must not enter the training set ("" when it may).

    :param judge: a model shown the profile that says whether the answer is supported.
    """
    text = answer.strip()
    if not text:
        return "empty"
    if finish_reason == "length":
        return "cut_off"
    if TEMPLATE_TOKEN.search(text):
        return "template_tokens"
    # A restatement's prompt quotes its fact in the person's own words ("Our controllers
    # run in ..."): those are not the visitor's, so they excuse no "our" in the answer.
    visitor = record.prompt.replace(record.fact, "") if record.fact else record.prompt
    if speaks_as_person(text, visitor):
        return "first_person"
    if record.category == "vague" and "?" not in text:
        # Told to ask back, a 1.5B teacher answered vague messages instead ("Is that good?"
        # -> "Yes, that's good."), with general advice or as the person.
        return "no_question_back"
    # Capitalised words are names in English only (German capitalises every noun).
    english = is_english(record.language)
    claims = unsupported_claims(text, project.profile, record.prompt, names=english)
    if record.fact:
        # A number must come from the fact asked about, not from elsewhere in the profile.
        claims += unsupported_claims(text, record.fact, record.prompt, names=False)
    if claims:
        return f"unsupported: {', '.join(dict.fromkeys(claims))}"
    if record.language and record.language != "en":
        found = identify(text, {record.language, "en"}, names_in(project.profile))
        if found and found != record.language:
            return f"wrong_language: {found}"
    if is_refusal(text):
        # A question written about a profile fact has an answer: declining it would teach
        # the student to refuse what it should know.
        return "refused_answerable" if record.fact else ""
    facts = _fact_texts(project.profile)
    if record.fact and english and states_other_fact(text, record.fact, facts, project.name):
        return "off_fact"
    if judge is not None and not _judge_supports(judge, project, record.prompt, text):
        return "judge: unsupported"
    return ""


@lru_cache(maxsize=4)
def _fact_texts(profile: str) -> tuple[str, ...]:
    """The profile's facts, parsed once per profile rather than once per checked answer."""
    return tuple(fact.text for fact in profile_facts(profile))


def _judge_supports(judge: ChatBackend, project: Project, question: str, answer: str) -> bool:
    messages = [
        {
            "role": "system",
            "content": JUDGE_SYSTEM.format(name=project.name, profile=project.profile),
        },
        {
            "role": "user",
            "content": f"Question: {question}\nAnswer: {answer}\n"
            "Is every claim in the answer written in the profile?",
        },
    ]
    verdict = judge.complete(messages, SamplingParams(temperature=0, max_tokens=4)).text
    return "UNSUPPORTED" not in verdict.upper()


def _answer(teacher: ChatBackend, messages: list[dict], params: SamplingParams) -> dict:
    completion = teacher.complete(messages, params)
    # The text stays as generated, so it lines up with the token log-probs kept beside it.
    return {
        "answer": completion.text,
        "finish_reason": completion.finish_reason,
        "logprobs": _logprobs(completion),
    }


def _check(
    project: Project,
    judge: ChatBackend | None,
    record: PromptRecord,
    answer: str,
    finish_reason: str,
) -> dict:
    return {"reason": check_answer(project, record, answer, finish_reason, judge)}


def _logprobs(completion: Completion) -> dict | None:
    """Per answer token: its id, text and log-prob, and the top-k ids, texts and log-probs."""
    if not completion.tokens or completion.tokens[0].logprob is None:
        return None
    tokens = completion.tokens
    return {
        "ids": [t.id for t in tokens],
        "tokens": [t.token for t in tokens],
        "logprobs": [round(t.logprob, 5) for t in tokens],
        "top_ids": [[c.id for c in t.top] for t in tokens],
        "top_tokens": [[c.token for c in t.top] for t in tokens],
        "top_logprobs": [[round(c.logprob, 5) for c in t.top] for t in tokens],
    }


def _row(record: PromptRecord, answer: dict, teacher: str) -> dict:
    """A training row: chat messages (no profile: the student learns without it) + metadata."""
    return {
        "id": record.id,
        "messages": [
            {"role": "user", "content": record.prompt},
            {"role": "assistant", "content": answer["answer"]},
        ],
        "category": record.category,
        "source": record.source,
        "language": record.language,
        "fact": record.fact,
        "teacher": teacher,
        "teacher_logprobs": answer["logprobs"],
    }
