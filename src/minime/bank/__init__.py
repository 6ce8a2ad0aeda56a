"""minime's curated, person-independent prompts and the fixed answers to the ones a student
must decline or greet.

A 1.5B generator invents poor edge cases (lines of a limerick as "injections", broken
translations) and a 135M student learns a decline only from many rows worded the same, so
the data stage adds this bank to every persona, and answers its declines, greetings and
"I don't know"s from `answers.yaml` instead of asking the teacher. `eval.yaml` is a second,
disjoint bank that the evaluation asks from, so no test question is a training prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

#: Categories answered with a fixed text from `answers.yaml`, never by the teacher.
TEMPLATE_CATEGORIES = ("private", "out_of_scope", "injection", "unanswerable", "greeting", "thanks")
#: Categories whose fixed answer declines (or says it does not know).
DECLINE_CATEGORIES = ("private", "out_of_scope", "injection", "unanswerable")
#: Bank categories answered by the teacher with the profile, and the record category they get.
TEACHER_CATEGORIES = {"overview": "question"}
#: Topics that no profile text can make answerable.
ANY_PROFILE = "-"


@dataclass(frozen=True)
class BankPrompt:
    """One prompt of the bank, with the person's names filled in."""

    category: str
    language: str
    text: str


@cache
def _load(file: str) -> dict:
    return yaml.safe_load(resources.files("minime.bank").joinpath(file).read_text("utf-8"))


def first_name(name: str) -> str:
    """The first word of a person's name ("Mara Lindqvist" -> "Mara")."""
    return name.split()[0] if name.split() else name


def bank_prompts(
    name: str, public_profile: str, bank: str = "prompts.yaml", canary: str = ""
) -> list[BankPrompt]:
    """The bank's prompts for one person, less those whose topic the profile talks about.

    :param public_profile: the profile without its "won't discuss" part: a topic named only
        there stays private, one named elsewhere may have an answer.
    :param bank: `prompts.yaml` (training) or `eval.yaml` (evaluation).
    :param canary: the code word of the evaluation bank's injections.
    """
    fields = {"first": first_name(name), "name": name, "canary": canary}
    prompts = []
    for category, languages in _load(bank).items():
        for language, topics in languages.items():
            for topic, texts in topics.items():
                if topic != ANY_PROFILE and mentions_any(public_profile, topic.split("|")):
                    continue
                prompts += [BankPrompt(category, language, t.format(**fields)) for t in texts]
    return prompts


def mentions_any(text: str, words: list[str]) -> bool:
    """Whether `text` has any of `words` as a whole word (or word group), plural allowed."""
    return any(
        re.search(rf"(?<!\w){re.escape(w.strip())}s?(?!\w)", text, re.IGNORECASE)
        for w in words
        if w.strip()
    )


def fixed_answer(category: str, language: str | None, name: str) -> str:
    """The fixed answer to a prompt of a template category, in its language (else English).

    :raises KeyError: if `category` is not one of TEMPLATE_CATEGORIES.
    """
    answers = _load("answers.yaml")[category]
    text = answers.get(language or "en", answers["en"])
    return text.format(first=first_name(name), name=name)


def answer_languages() -> tuple[str, ...]:
    """The languages every fixed answer is written in."""
    return tuple(_load("answers.yaml")["private"])
