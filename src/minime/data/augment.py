"""Step 2 of `minime data`: more phrasings of every real prompt and of every profile fact.

Knowledge only gets into a small model's weights when each fact is seen in many
phrasings, so besides paraphrasing real prompts this asks, fact by fact, for several
distinct questions about each statement of the profile.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import partial
from pathlib import Path

from pydantic import BaseModel

from minime.backends import ChatBackend
from minime.bank import first_name
from minime.config import DataConfig
from minime.data.records import PromptRecord, read_records, records_from_results
from minime.generation import (
    Fact,
    ask_list,
    fact_question_system,
    generator_key,
    generator_system,
    looks_like_question,
    profile_facts,
    usable_fact_question,
    usable_question,
)
from minime.jsonl import write_jsonl
from minime.language import (
    LANGUAGE_NAMES,
    candidate_languages,
    names_in,
    proper_names,
    reads_as,
)
from minime.project import Project
from minime.tasks import run_tasks, task_key, work_file, worker_count

#: Extra asks for facts that got fewer than `questions_per_fact` usable questions (one:
#: `cover` tops up again after dedup and the answer checks, which is what counts).
TOP_UP_ROUNDS = 1


class AugmentReport(BaseModel):
    """What augment wrote."""

    paraphrases: int
    chained: int
    profile_questions: int
    facts: int
    total: int


def augment(
    project: Project,
    collected: Path,
    dst: Path,
    generators: list[ChatBackend],
    config: DataConfig,
) -> AugmentReport:
    """Paraphrase real prompts, chain them, and ask questions about every profile fact.

    Writes `dst` (PromptRecords); the generation tasks are kept in `<stem>.tasks.jsonl` so an
    interrupted run resumes. Generators take turns, task by task.
    """
    _, real = read_records(collected)
    system, prompt_key = generator_system(project), generator_key(project)
    fact_system = fact_question_system(project)
    facts = profile_facts(project.profile)
    rng = random.Random(config.seed)
    tasks = []
    for i, record in enumerate(real):
        backend = generators[i % len(generators)]
        job = partial(_paraphrase, backend, system, record, config.paraphrases, i)
        key = task_key("paraphrase", record.id, config.paraphrases, backend.name, prompt_key)
        tasks.append((key, job))
    for i, group in enumerate(_chain_groups(real, config.chains, rng)):
        backend = generators[i % len(generators)]
        job = partial(_chain, backend, system, group, 1000 + i)
        tasks.append((task_key("chain", *(r.id for r in group), backend.name, prompt_key), job))
    for i, fact in enumerate(facts):
        backend = generators[i % len(generators)]
        count = config.questions_per_fact
        job = partial(_ask_fact, backend, fact_system, project.name, fact, count, 2000 + i)
        key = task_key("fact", fact.section, fact.text, count, backend.name, fact_system)
        tasks.append((key, job))
        count = config.questions_per_answer
        for answer in answers_in(fact.text, project.name) if count else []:
            job = partial(_ask_answer, backend, fact_system, project.name, fact, answer, count)
            key = task_key("answer", answer, fact.text, count, backend.name, fact_system)
            tasks.append((key, job))
        # Facts learned in one language transfer poorly to others: each fact is also asked
        # in the configured languages, one question per language, the languages in turn.
        for language, count in _languages_for(i, config.languages, config.translated_per_fact):
            job = partial(
                _ask_fact_in, backend, fact_system, project.name, fact, language, count, 4000 + i
            )
            key = task_key("fact-in", language, fact.text, count, backend.name, fact_system)
            tasks.append((key, job))
    workers = worker_count(config.concurrency, generators)
    results = list(run_tasks(work_file(dst, "tasks"), tasks, "augment", workers).values())
    for round_ in range(1, TOP_UP_ROUNDS + 1):
        asked = _questions_per_fact(results, project.name)
        short = [f for f in facts if len(asked.get(f.text, [])) < config.questions_per_fact]
        if not short:
            break
        tasks = []
        for i, fact in enumerate(short):
            backend = generators[(i + round_) % len(generators)]
            have = asked.get(fact.text, [])
            missing = config.questions_per_fact - len(have)
            job = partial(
                _top_up,
                backend,
                fact_system,
                project.name,
                fact,
                missing,
                have,
                5000 + 100 * round_ + i,
            )
            key = task_key(
                "top-up", round_, fact.section, fact.text, have, backend.name, fact_system
            )
            tasks.append((key, job))
        description = f"more questions for {len(short)} facts"
        topped = run_tasks(work_file(dst, f"top-up{round_}"), tasks, description, workers)
        results += topped.values()
    by_id = {r.id: r for r in real}
    results = [_checked_chain(r, by_id) if r["category"] == "chained" else r for r in results]
    languages, names = candidate_languages(config.languages), names_in(project.profile)
    records = [
        r
        for r in records_from_results(results)
        if (
            usable_fact_question(r.prompt, project.name, r.language)
            if r.fact
            else usable_question(r.prompt)
        )
        and reads_as(r.prompt, r.language, languages, names)
    ]
    write_jsonl(dst, (r.model_dump() for r in records))
    return AugmentReport(
        paraphrases=sum(r.source == "augment" and r.category == "question" for r in records),
        chained=sum(r.category == "chained" for r in records),
        profile_questions=sum(r.source == "profile" for r in records),
        facts=len(facts),
        total=len(records),
    )


def _paraphrase(
    backend: ChatBackend, system: str, record: PromptRecord, count: int, seed: int
) -> dict:
    instruction = (
        f"Rewrite this visitor question in {count} different ways: vary the wording, and in "
        "at least one change the word order or sentence structure. Keep the meaning.\n"
        f"Question: {record.prompt}"
    )
    lines = ask_list(backend, system, instruction, count, seed=seed)
    return {
        "source": "augment",
        "category": "question",
        "origin": f"paraphrase of {record.id}",
        "generator": backend.name,
        "prompts": lines,
    }


def _chain(backend: ChatBackend, system: str, group: list[PromptRecord], seed: int) -> dict:
    asked = "\n".join(f"- {r.prompt}" for r in group)
    instruction = (
        f"Combine these questions into one natural message from a visitor that asks all of "
        f"them:\n{asked}"
    )
    lines = ask_list(backend, system, instruction, 1, seed=seed)
    origin = "chain of " + ",".join(r.id for r in group)
    return {
        "source": "augment",
        "category": "chained",
        "origin": origin,
        "generator": backend.name,
        "prompts": lines,
    }


def _ask_fact(
    backend: ChatBackend, system: str, name: str, fact: Fact, count: int, seed: int
) -> dict:
    instruction = (
        f"Write {count} different questions a visitor could ask whose answer is this "
        f'statement from {name}\'s profile:\n"{fact.text}" (section: {fact.section or "intro"})\n'
        "Vary them: direct and indirect, short and long, formal and casual, and one with a "
        f"typo. Call {name} by name or she/he/they, never 'you'."
    )
    lines = ask_list(backend, system, instruction, count, seed=seed)
    return fact_result(backend, fact, lines)


#: A number of a statement: digits ("140", "1,200", "7:30") or an English number word.
_NUMBER = re.compile(
    r"\b(?:\d+(?:[.,:]\d+)*|one|two|three|four|five|six|seven|eight|nine|ten|eleven|"
    r"twelve|twice)\b",
    re.IGNORECASE,
)


def answers_in(fact: str, name: str) -> list[str]:
    """What a visitor may ask a statement for: its names and numbers, less the person's."""
    names = proper_names(fact, person=name)
    numbers = [n for n in _NUMBER.findall(fact) if not any(n in name for name in names)]
    return list(dict.fromkeys([*names, *numbers]))


def _ask_answer(
    backend: ChatBackend, system: str, name: str, fact: Fact, answer: str, count: int
) -> dict:
    """Questions whose answer is one name or number of `fact`: told what the answer is, a
    1.5B generator asks what the statement says (asked for questions about the whole
    statement, it asked what the statement does not say: "How many weeks per year does
    Mara practice the cello?")."""
    first = first_name(name)
    instruction = (
        f'This statement is from {name}\'s profile:\n"{fact.text}"\n'
        f"Write {count} different questions a visitor could ask about {first} whose answer "
        f'is "{answer}", as the statement says it. A question must not contain "{answer}". '
        f"Call {first} by name or she/he/they, never 'you'."
    )
    seed = int(task_key(fact.text, answer)[:8], 16)
    lines = ask_list(backend, system, instruction, count, seed=seed)
    asked = [q for q in lines if answer.lower() not in q.lower()]
    return {**fact_result(backend, fact, asked), "origin": f"profile: {fact.section} ({answer})"}


def _ask_fact_in(
    backend: ChatBackend,
    system: str,
    name: str,
    fact: Fact,
    language: str,
    count: int,
    seed: int,
) -> dict:
    language_name = LANGUAGE_NAMES.get(language, language)
    instruction = (
        f"Write {count} different questions in {language_name}, as a native {language_name} "
        f"speaker would type them, whose answer is this statement from {name}'s profile:\n"
        f"\"{fact.text}\"\nCall {name} by name, never 'you'. Write {language_name} only."
    )
    lines = ask_list(backend, system, instruction, count, seed=seed)
    return {
        **fact_result(backend, fact, lines),
        "category": "multilingual",
        "language": language,
    }


def _languages_for(index: int, languages: list[str], count: int) -> list[tuple[str, int]]:
    """(language, questions) for the `index`-th fact: `count` questions, each in the next
    of `languages` after those of the facts before it."""
    if not languages:
        return []
    chosen = [languages[(index * count + j) % len(languages)] for j in range(count)]
    return list(Counter(chosen).items())  # a Counter keeps first-seen order


def _top_up(
    backend: ChatBackend,
    system: str,
    name: str,
    fact: Fact,
    count: int,
    have: list[str],
    seed: int,
) -> dict:
    asked = "\n".join(f"- {q}" for q in have) or "- (none yet)"
    instruction = (
        f"Write {count} more questions a visitor could ask whose answer is this statement "
        f'from {name}\'s profile:\n"{fact.text}"\nCall {name} by name or she/he/they, '
        f"never 'you'. Each must differ from these questions already asked:\n{asked}"
    )
    lines = [
        q
        for q in ask_list(backend, system, instruction, count, seed=seed)
        if q.lower() not in {h.lower() for h in have}
    ]
    return fact_result(backend, fact, lines)


def fact_result(backend: ChatBackend, fact: Fact, lines: list[str]) -> dict:
    """A generation result: questions written about one profile fact."""
    return {
        "source": "profile",
        "category": "question",
        "origin": f"profile: {fact.section}",
        "fact": fact.text,
        "generator": backend.name,
        "prompts": lines,
    }


def _questions_per_fact(results: list[dict], name: str) -> dict[str, list[str]]:
    """The distinct usable questions generated so far about each fact, per fact."""
    asked: dict[str, list[str]] = {}
    for result in results:
        if result.get("fact") and result["category"] == "question":
            known = asked.setdefault(result["fact"], [])
            for prompt in result["prompts"]:
                usable = usable_fact_question(prompt, name, result.get("language"))
                if usable and prompt not in known:
                    known.append(prompt)
    return asked


def _checked_chain(result: dict, real: dict[str, PromptRecord]) -> dict:
    """A chain task's result, with a joined prompt where the generator did not combine them.

    Small generators often return one of the questions, or an answer, instead of one
    message asking all of them; a fixed joining pattern still asks every part.
    """
    parts = [real[i].prompt for i in result["origin"].removeprefix("chain of ").split(",")]
    text = result["prompts"][0] if result["prompts"] else ""
    combined = looks_like_question(text) and (
        text.count("?") >= len(parts)
        or (" and " in text.lower() and len(text) >= 0.6 * sum(map(len, parts)))
    )
    if combined:
        return result
    pattern = _JOINS[sum(map(len, parts)) % len(_JOINS)]
    rest = " ".join(p[:1].lower() + p[1:] for p in parts[1:])
    return {**result, "prompts": [pattern.format(first=parts[0], rest=rest)]}


_JOINS = ("{first} And {rest}", "{first} Also, {rest}", "Two things: {first} And {rest}")


def _chain_groups(real: list[PromptRecord], count: int, rng: random.Random):
    if len(real) < 2:
        return []
    return [rng.sample(real, k=min(len(real), rng.choice((2, 2, 3)))) for _ in range(count)]
