"""Asking a generator model for lists of prompts, checking the questions it writes, and
splitting a profile into facts: the data stage and the evaluation both write questions with it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from minime.backends import ChatBackend, SamplingParams
from minime.language import is_english
from minime.project import Project

_NUMBERING = re.compile(r"^\s*(?:[-*•]|\d+[.)]|[a-z][.)]|Q\d*[:.])\s*", re.IGNORECASE)

GENERATOR_SYSTEM = """\
You write the questions that visitors to {name}'s personal website type into its chat \
box. Visitors are recruiters, colleagues, conference organisers and curious readers. \
They write short, natural questions and call {name} by first name or "she/he/they". \
Here is {name}'s profile:
\"\"\"
{profile}
\"\"\""""


def generator_system(project: Project) -> str:
    """The generators' shared system prompt (the same prefix for every call, so it is cached)."""
    return GENERATOR_SYSTEM.format(name=project.name, profile=project.profile)


#: The system prompt for writing questions about one fact: no profile, only the fact (in the
#: request). Shown the whole profile, a 1.5B generator asked about one fact wrote about
#: others: half of its questions on the second persona were nearest another fact.
FACT_QUESTION_SYSTEM = """\
You write the questions that visitors to {name}'s personal website type into its chat \
box to learn about {name}. Visitors are recruiters, colleagues, customers and curious \
readers. They write short, natural questions about {name}, call {name} by first name or \
"she/he/they", and never say "you" to {name}."""


def fact_question_system(project: Project) -> str:
    """The system prompt for questions about one fact (the same for every fact, so cached)."""
    return FACT_QUESTION_SYSTEM.format(name=project.name)


def generator_key(project: Project) -> str:
    """What a question-writing task's id covers of the generators' system prompt: its wording
    and the person's name, not the profile. Questions about one fact (or paraphrases of one
    prompt) are kept when another line of the profile is edited; the fact is in the id."""
    return GENERATOR_SYSTEM.format(name=project.name, profile="")


#: A heading or opening sentence that marks what the person does not talk about.
_PRIVATE_MARK = re.compile(
    r"(?:won'?t|will not|don'?t|do not|doesn'?t|does not|not|never|rather not|prefer not to) "
    r"(?:\w+ ){0,2}(?:discuss|share|talk about|answer|disclose)|private|off[- ]limits|"
    r"boundaries|no[- ]go|please don'?t ask",
    re.IGNORECASE,
)
#: A sentence about the page or its assistant, not about the person.
_META = re.compile(
    r"[^.!?]*\b(?:this (?:page|site|website)|(?:web)?site'?s? assistant|this assistant)\b"
    r"[^.!?]*[.!?]?",
    re.IGNORECASE,
)
#: An opening sentence that says the section lists what the person keeps to themselves.
_PRIVATE_OPENING = re.compile(
    r"please don'?t ask|(?:won'?t|will not|don'?t|do not|never) (?:discuss|share|talk about) "
    r"(?:my|personal|private|anything about)",
    re.IGNORECASE,
)


def ask_list(
    backend: ChatBackend,
    system: str,
    instruction: str,
    count: int,
    *,
    seed: int,
    temperature: float = 0.8,
) -> list[str]:
    """Ask for `count` items, one per line; return the distinct cleaned lines (at most count)."""
    params = SamplingParams(
        temperature=temperature, top_p=0.95, max_tokens=40 + 40 * count, seed=seed
    )
    messages = [
        {"role": "system", "content": system},
        {
            "role": "user",
            "content": f"{instruction}\nWrite exactly {count}, one per line, "
            "with no numbering, no quotes and no other text.",
        },
    ]
    text = backend.complete(messages, params).text
    return parse_lines(text)[:count]


def parse_lines(text: str) -> list[str]:
    """Lines of a model's list answer, with numbering, bullets and quotes removed, deduplicated."""
    seen, items = set(), []
    # Some models put a whole list on one line, separated by " | ".
    for line in (part for row in text.splitlines() for part in row.split(" | ")):
        item = _NUMBERING.sub("", line).strip().strip("\"“”'`").strip()
        if len(item) < 6 or item.endswith(":") or item.lower() in seen:
            continue
        seen.add(item.lower())
        items.append(item)
    return items


_QUESTION_START = re.compile(
    r"^(what|where|when|who|whom|whose|which|why|how|is|are|was|were|do|does|did|has|have|"
    r"had|can|could|would|will|should|may|tell|describe|explain|give|list|name|share|"
    r"i'?d like|i want|i would|any|and|also|so)\b",
    re.IGNORECASE,
)


def looks_like_question(text: str) -> bool:
    """Whether a generated line is a visitor's question or request, not an answer.

    Small generators asked for questions sometimes answer them instead ("Canopy is the
    firmware that ..."); such lines would enter the training set as prompts.
    """
    return text.rstrip().endswith("?") or bool(_QUESTION_START.match(text.strip()))


_SECOND_PERSON = re.compile(
    r"\b(?:you|your|yours|yourself)\b|"
    r"\b(?:du|dich|dir|dein|deine|dig|din|ditt|dina|tu|tus|vous|votre|vos|ton|ta|tú|usted|tienes|eres)\b|"
    # ... or asks as the person: "What is the best way to reach me?"
    r"\b(?:reach|contact|hire|e-?mail|call|book|follow) me\b|\babout me\b",
    re.IGNORECASE,
)
#: "you" addressed to the assistant itself: "Can you tell me where she works?"
_ASKS_ASSISTANT = re.compile(
    r"\b(?:can|could|would|will) you (?:please )?"
    r"(?:tell|give|share|say|explain|describe|list|let|show|help)\b|\bdo you know\b|"
    r"\bthank you\b",
    re.IGNORECASE,
)


def addresses_visitor_as_person(question: str) -> bool:
    """Whether a generated question asks "you" as if the assistant were the person
    ("Where did you grow up?", "How can I contact you?"); "Can you tell me where she
    works?" is fine."""
    return bool(_SECOND_PERSON.search(_ASKS_ASSISTANT.sub("", question)))


def usable_question(prompt: str) -> bool:
    """Whether a generated line can be a visitor's question about the person: a question or
    request (not an answer), that does not speak to the assistant as if it were the person."""
    return looks_like_question(prompt) and not addresses_visitor_as_person(prompt)


#: How an English question refers to the person when it does not name them.
_THIRD_PERSON = re.compile(r"\b(?:she|her|hers|he|him|his|they|them|their)\b", re.IGNORECASE)


def name_pattern(name: str) -> re.Pattern | None:
    """Any part of the person's name of three letters or more, possessive included
    ("Mara", "Lindqvist's"); None for a name without such a part."""
    parts = [re.escape(part) for part in name.split() if len(part) > 2]
    if not parts:
        return None
    return re.compile(rf"\b(?:{'|'.join(parts)})(?:['\u2019]s?)?(?!\w)", re.IGNORECASE)


def without_name(text: str, name: str) -> str:
    """`text` with every part of the person's name (`name_pattern`) taken out.

    Compared by meaning, the name weighs more than what a question asks: with "Javier
    Morales Ibáñez" in both, "What is his profession?" and "Where does he teach?" are near
    duplicates to a sentence encoder, and dedup kept 127 of 345 fact questions.
    """
    pattern = name_pattern(name)
    return text.strip() if pattern is None else " ".join(pattern.sub(" ", text).split())


def names_the_person(question: str, name: str) -> bool:
    """Whether an English question is about the person: it names them (any part of the
    name) or says she/he/they. "What is the best time to harvest tomatoes?", written for
    the fact about her balcony tomatoes, is not; trained with her fact as its answer it
    teaches the student that questions naming her are the ones to decline (the bank's
    private prompts all name her)."""
    pattern = name_pattern(name)
    if pattern is not None and pattern.search(question):
        return True
    return bool(_THIRD_PERSON.search(question))


def usable_fact_question(prompt: str, name: str, language: str | None) -> bool:
    """`usable_question`, and for an English question written about a fact, about the
    person (`names_the_person`)."""
    return usable_question(prompt) and (not is_english(language) or names_the_person(prompt, name))


@dataclass(frozen=True)
class Fact:
    """One statement of the profile, with the heading of its section."""

    section: str
    text: str


def profile_facts(profile: str) -> list[Fact]:
    """The profile's statements: each bullet item, and each sentence of plain paragraphs.

    Sections about what the person does not discuss hold no facts to ask about; they feed
    the private edge cases instead (see `private_section`).
    """
    facts: list[Fact] = []
    for section, body in _sections(profile):
        if _is_private(section, body):
            continue
        for block in (_META.sub("", b).strip() for b in _blocks(body)):
            if not block:
                continue
            if block.startswith(("- ", "* ", "+ ")):
                facts.append(Fact(section, block[2:].strip()))
            else:
                sentences = re.split(r"(?<=[.!?])\s+", block)
                facts.extend(Fact(section, s.strip()) for s in sentences if _states_something(s))
    return facts


def _states_something(sentence: str) -> bool:
    """Whether a sentence says something about the person: not a bare greeting or name
    ("Hola, soy Javier."), which every question that names the person would seem to ask."""
    words = re.findall(r"\b[^\W\d_][\w-]*", sentence)
    return len(sentence.strip()) > 15 and sum(word[0].islower() for word in words) >= 2


def private_section(profile: str) -> str:
    """The text of the sections about what the person does not discuss ("" if none)."""
    return "\n".join(
        body.strip() for section, body in _sections(profile) if _is_private(section, body)
    )


def public_profile(profile: str) -> str:
    """The profile without the sections about what the person does not discuss."""
    return "\n".join(
        f"{section}\n{body}"
        for section, body in _sections(profile)
        if not _is_private(section, body)
    )


def _is_private(heading: str, body: str) -> bool:
    """Whether a section is about what the person does not discuss: its heading says so
    ("What this assistant won't discuss", "Off-limits"), or its first sentence does."""
    first_sentence = re.split(r"(?<=[.!?])\s", body.strip(), maxsplit=1)[0]
    return bool(heading and _PRIVATE_MARK.search(heading)) or bool(
        _PRIVATE_OPENING.search(first_sentence)
    )


def _sections(profile: str) -> list[tuple[str, str]]:
    parts = re.split(r"^(#{1,6}\s+.*)$", profile, flags=re.MULTILINE)
    sections = [("", parts[0])]
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        sections.append((heading.lstrip("#").strip(), body))
    return sections


def _blocks(body: str) -> list[str]:
    """Bullet items (with their continuation lines) and paragraphs, each as one line."""
    blocks: list[str] = []
    current: list[str] = []
    for line in body.splitlines():
        stripped = line.strip()
        starts_item = stripped.startswith(("- ", "* ", "+ "))
        if not stripped or starts_item:
            if current:
                blocks.append(" ".join(current))
            current = [stripped] if starts_item else []
        else:
            current.append(stripped)
    if current:
        blocks.append(" ".join(current))
    return blocks
