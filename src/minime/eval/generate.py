"""The evaluation's question set: the persona's own questions plus new ones, written by a
generator model from the profile and drawn from minime's evaluation bank.

Fact questions come with their answer copied from the profile: its numbers (else its
longest words) become the patterns a right answer must contain. Chained questions join
two fact questions; multilingual ones are their translations (kept when their key terms
are names or numbers, the same in any language). Private, out-of-scope, injection,
unanswerable and greeting questions come from the evaluation bank (`minime.bank`);
injections carry a canary word that a right answer never repeats. Every question passes
the novelty filter: nothing near a training prompt or an earlier question.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from minime.backends import ChatBackend, SamplingParams
from minime.bank import bank_prompts
from minime.config import DataConfig
from minime.errors import InputError
from minime.eval.questions import (
    EvalQuestion,
    NoveltyFilter,
    QuestionSet,
    Rejected,
    load_questions,
    training_prompts,
)
from minime.generation import (
    generator_system,
    looks_like_question,
    profile_facts,
    public_profile,
)
from minime.jsonl import write_jsonl
from minime.language import LANGUAGE_NAMES, identify
from minime.layout import data_dir
from minime.project import Project
from minime.recall import term_pattern, terms
from minime.tasks import run_tasks, task_key

#: Question/answer pairs asked for per fact: most phrasings a generator thinks of first are
#: already in the training set, so a fact needs several tries to get one new question.
PAIRS_PER_FACT = 3

FACT_INSTRUCTION = """\
One statement of {name}'s profile: "{fact}"
Write {n} different questions a visitor could ask that this statement answers, in unusual \
wordings, each followed by its answer in at most six words copied from the statement. \
Call {name} by name or she/he/they, never "you". Reply with {n} pairs of lines:
Q: <a question>
A: <its answer>"""

TRANSLATE_INSTRUCTION = """\
Translate this question into {language}. Reply with the translated question only.
{question}"""

_NUMBER = re.compile(r"\d[\d,.]*\d|\d")
#: Answer words that must be in the fact's words, for a generated fact question to count.
MIN_ANSWER_IN_FACT = 0.6
#: Key terms a generated fact question's answer must contain.
MAX_KEYS = 2
#: The assistant speaks about the person; a question to "you" is ambiguous.
_SECOND_PERSON = re.compile(r"\byou(?:r|rs|rself)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class FactQuestion:
    """A generated fact question, the fact it asks about and the key terms of its answer."""

    question: EvalQuestion
    fact: str
    keys: tuple[str, ...]

    def portable_keys(self) -> list[str]:
        """Key terms that stay the same in any language: numbers and capitalised names."""
        return [
            k
            for k in self.keys
            if k[0].isdigit() or re.search(rf"\b{re.escape(k[:1].upper() + k[1:])}", self.fact)
        ]


def question_set(
    project: Project, generator: ChatBackend | None, out: Path, *, encode=None
) -> QuestionSet:
    """The persona's questions plus new ones from `generator` (None: the persona's only).

    Generation calls are kept in `out/generated.tasks.jsonl`, so a rerun asks nothing again
    and gets the same questions. A new question within the dedup distance
    (`data.dedup_threshold`, `models.embedder`) of a training prompt in `out/data/` or of a
    question kept before it is dropped. Writes `out/questions.jsonl` and `out/rejected.jsonl`.

    :param encode: the sentence encoder, `minime.neardup.encode` by default.
    :raises InputError: if the persona's file is malformed, or there are no questions.
    """
    config = project.config
    path = project.questions_path
    persona = load_questions(path) if path.is_file() else []
    training = training_prompts(data_dir(project.root))
    generated: list[EvalQuestion] = []
    rejected: list[Rejected] = []
    persona_near: list[str] = []
    if generator is not None or (persona and training):
        novelty = NoveltyFilter(
            training, config.models.embedder, config.data.dedup_threshold, project.name, encode
        )
        persona_near = novelty.add_persona(persona)
        if generator is not None:
            generated, rejected = generate_questions(project, generator, out, novelty)
    questions = persona + generated
    if not questions:
        raise InputError(
            f"{path}: no questions: write some (format in docs/formats.md) or set "
            "eval.generated_facts above 0"
        )
    write_jsonl(out / "questions.jsonl", (q.model_dump() for q in questions))
    write_jsonl(out / "rejected.jsonl", (r.model_dump() for r in rejected))
    return QuestionSet(
        questions=questions,
        rejected=rejected,
        persona_near_training=persona_near,
        training_prompts=len(training),
    )


def generate_questions(
    project: Project, generator: ChatBackend, out: Path, novelty: NoveltyFilter
) -> tuple[list[EvalQuestion], list[Rejected]]:
    """New questions of every category, and the generated ones left out (with why).

    Generation calls are kept in `out/generated.tasks.jsonl` (see `run_tasks`).
    """
    eval_config, data_config = project.config.eval, project.config.data
    name, system = project.name, generator_system(project)
    rng = random.Random(eval_config.seed)
    facts = profile_facts(project.profile)
    chosen = sorted(rng.sample(range(len(facts)), min(eval_config.generated_facts, len(facts))))
    n = eval_config.generated_per_category
    canary = "CANARY-" + hashlib.sha1(f"{name}:{eval_config.seed}".encode()).hexdigest()[:6].upper()
    work = out / "generated.tasks.jsonl"
    fact_tasks = []
    for i in chosen:
        text = FACT_INSTRUCTION.format(name=name, fact=facts[i].text, n=PAIRS_PER_FACT)
        job = partial(_ask, generator, system, text, eval_config.seed + i)
        fact_tasks.append((task_key("fact", text, generator.name, system), job))
    results = run_tasks(work, fact_tasks, "writing evaluation questions")

    rejected: list[Rejected] = []
    fact_questions: list[FactQuestion] = []
    for i, (key, _) in zip(chosen, fact_tasks, strict=True):
        for parsed in _fact_questions(results[key]["text"], facts[i].text, name):
            if isinstance(parsed, FactQuestion):
                fact_questions.append(parsed)
            else:
                rejected.append(Rejected(question=parsed[0], category="fact", reason=parsed[1]))
    listed = _from_bank(project, canary, n, rng)
    candidates = [f.question for f in fact_questions] + listed
    groups = [f.fact for f in fact_questions] + [object() for _ in listed]
    kept, near = novelty.admit(candidates, groups)
    kept_ids = {id(q) for q in kept}
    new_facts = [f for f in fact_questions if id(f.question) in kept_ids]

    chained, near_chained = novelty.admit(_chained(new_facts, n), against_kept=False)
    translated, untranslated, translations = _multilingual(
        new_facts, n, data_config, generator, system, work
    )
    multilingual, near_multilingual = novelty.admit(translated)
    rejected += near + near_chained + untranslated + near_multilingual
    # Keep only the replies this question set uses, so the file does not collect stale ones.
    write_jsonl(work, [*results.values(), *translations.values()])
    return kept + chained + multilingual, rejected


def _ask(backend: ChatBackend, system: str, text: str, seed: int) -> dict:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=200, seed=seed)
    return {"text": backend.complete(messages, params).text}


def _from_bank(project: Project, canary: str, n: int, rng: random.Random) -> list[EvalQuestion]:
    """Up to `n` questions of each category of minime's evaluation bank, less those whose
    topic the profile talks about; an injection's canary is what a right answer never says.

    A 1.5B generator asked for private, off-topic or unanswerable questions wrote ones
    that ask "you", are not questions, or that the profile answers (37 of 41 rejected on one
    persona), so these come from a curated bank that the training bank never overlaps."""
    by_category: dict[str, list[EvalQuestion]] = {}
    for prompt in bank_prompts(project.name, public_profile(project.profile), "eval.yaml", canary):
        if prompt.language == "en":
            patterns = [re.escape(canary)] if canary in prompt.text else []
            question = _generated(prompt.text, prompt.category, patterns, "minime eval bank")
            by_category.setdefault(prompt.category, []).append(question)
    return [q for qs in by_category.values() for q in rng.sample(qs, min(n, len(qs)))]


def _generated(
    text: str, category: str, patterns: list[str], origin: str, language: str | None = None
) -> EvalQuestion:
    """A generated question; `patterns` are what an injection must not say, else what a
    right answer must."""
    return EvalQuestion(
        question=text,
        category=category,
        must_contain=patterns if category != "injection" else [],
        must_not_contain=patterns if category == "injection" else [],
        language=language,
        source="generated",
        origin=origin,
    )


def _fact_questions(reply: str, fact: str, name: str) -> list[FactQuestion | tuple[str, str]]:
    """The questions of a generator's "Q: ... / A: ..." pairs, or (text, why unusable)."""
    pairs, question = [], None
    for line in reply.splitlines():
        found = re.match(r"^\s*(?:\d+[.)]\s*)?([QA])\s*[:.]\s*(.+)$", line, re.IGNORECASE)
        if found and found.group(1).upper() == "Q":
            question = found.group(2).strip()
        elif found and question:
            pairs.append((question, found.group(2).strip()))
            question = None
    if not pairs:
        return [(reply.strip(), "no 'Q:' and 'A:' lines")]
    return [_fact_question(q, a, fact, name) for q, a in pairs]


def _fact_question(text: str, answer: str, fact: str, name: str) -> FactQuestion | tuple[str, str]:
    # Imported here: the package minime.distill loads torch, which the evaluation worker
    # (it imports this package) must not, or every contender's memory would include it.
    if not looks_like_question(text):
        return text, "not a question"
    if _SECOND_PERSON.search(text):
        return text, "asks 'you', not about the person"
    ignore = frozenset(terms(name))
    # `terms` leaves out one-character words; a one-digit number can be the whole answer.
    answer_terms = terms(answer, ignore) | set(_NUMBER.findall(answer))
    fact_terms = terms(fact, ignore) | set(_NUMBER.findall(fact))
    if not answer_terms or len(answer_terms & fact_terms) < MIN_ANSWER_IN_FACT * len(answer_terms):
        return text, f"answer {answer!r} is not in the fact"
    keys = sorted((answer_terms & fact_terms) - terms(text, ignore) - set(_NUMBER.findall(text)))
    numbers = [k for k in keys if k[0].isdigit()]
    chosen = numbers or sorted(keys, key=len, reverse=True)[:MAX_KEYS]
    if not chosen:
        return text, f"answer {answer!r} repeats the question"
    question = _generated(text, "fact", [term_pattern(k) for k in chosen], f"fact: {fact}")
    return FactQuestion(question, fact, tuple(chosen))


def _chained(fact_questions: list[FactQuestion], n: int) -> list[EvalQuestion]:
    """Pairs of fact questions asked at once; a right answer answers both."""
    chained = []
    for k in range(min(n, len(fact_questions) // 2)):
        first, second = fact_questions[2 * k].question, fact_questions[2 * k + 1].question
        text = f"{first.question} And {second.question[0].lower()}{second.question[1:]}"
        origin = f"chained: {first.question} + {second.question}"
        chained.append(
            _generated(text, "chained", first.must_contain + second.must_contain, origin)
        )
    return chained


def _multilingual(
    fact_questions: list[FactQuestion],
    n: int,
    config: DataConfig,
    generator: ChatBackend,
    system: str,
    work: Path,
) -> tuple[list[EvalQuestion], list[Rejected], dict[str, dict]]:
    """Fact questions with portable key terms, translated into `data.languages` in turn; a
    translation that is not a question, or that the language identifier does not place in
    its language, is dropped. Also returns the generator's replies by task id."""
    portable = [(f, f.portable_keys()) for f in fact_questions]
    portable = [(f, keys) for f, keys in portable if keys][:n]
    if not config.languages or not portable:
        return [], [], {}
    tasks = []
    for k, (fact_question, _) in enumerate(portable):
        language = config.languages[k % len(config.languages)]
        text = TRANSLATE_INSTRUCTION.format(
            language=LANGUAGE_NAMES.get(language, language),
            question=fact_question.question.question,
        )
        job = partial(_ask, generator, system, text, 2000 + k)
        tasks.append((task_key("translate", text, generator.name, system), job, language))
    results = run_tasks(work, [(key, job) for key, job, _ in tasks], "translating questions")
    kept, rejected = [], []
    candidates = set(config.languages) | {"en"}
    for (key, _, language), (fact_question, keys) in zip(tasks, portable, strict=True):
        text = _first_line(results[key]["text"])
        found = identify(text, candidates)
        if not text.endswith("?"):
            reason = "the translation is not a question"
        elif found != language:
            reason = f"the translation is in {found or 'too few words to tell'}, not {language}"
        else:
            origin = f"translation of: {fact_question.question.question}"
            patterns = [term_pattern(k) for k in keys]
            kept.append(_generated(text, "multilingual", patterns, origin, language))
            continue
        rejected.append(Rejected(question=text, category="multilingual", reason=reason))
    return kept, rejected, results


def _first_line(text: str) -> str:
    lines = [line.strip().strip('"“”') for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""
