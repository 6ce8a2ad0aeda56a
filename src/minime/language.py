"""Which language an answer is written in, with py3langid.

py3langid carries its model inside the wheel (a 4.6 MB naive Bayes over byte n-grams: no
download, no compiled extension) and ranks every language, so the choice can be limited
to the languages in play, which makes it reliable on the one- or two-sentence answers an
assistant gives. Names and addresses say nothing about the language ("Verdant Loop",
"hello@...") and are removed before the text is classified.
"""

from __future__ import annotations

import re
from functools import cache

from minime.recall import terms

#: English names of the languages minime writes and answers in, by ISO 639-1 code.
LANGUAGE_NAMES = {
    "sv": "Swedish",
    "de": "German",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "nl": "Dutch",
    "pt": "Portuguese",
    "da": "Danish",
    "no": "Norwegian",
    "fi": "Finnish",
    "pl": "Polish",
    "ja": "Japanese",
    "zh": "Chinese",
    "ar": "Arabic",
    "hi": "Hindi",
}

#: Words fewer than this, once names are removed, are too little to tell a language by.
MIN_WORDS = 3

_ADDRESS = re.compile(r"\S+@\S+|https?://\S+|@\w+\S*")
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*")
_CAPITALISED = re.compile(r"\b[A-ZÀ-Þ][\w'\u2019-]*")


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def is_english(language: str | None) -> bool:
    """Whether a record's `language` is English (records leave English unset)."""
    return language in (None, "en")


def names_in(text: str) -> frozenset[str]:
    """Capitalised words of `text` (the profile's names: people, places, products)."""
    return frozenset(_CAPITALISED.findall(text))


#: Lower-case particles inside a name ("University of Technology", "Escuela de Hostelería").
_PARTICLES = "of|de|del|la|le|van|von|der|da|do|du|des|di"
#: A capitalised word, or an initial ("Ursula K. Le Guin").
_NAME_WORD = r"(?:[A-ZÀ-Þ]\.|[A-ZÀ-Þ][\w'\u2019-]*)"
_NAME_RUN = re.compile(rf"{_NAME_WORD}(?:\s+(?:(?:{_PARTICLES})\s+)?{_NAME_WORD})*")
_QUOTED = re.compile(r'["\u201c]([^"\u201c\u201d]{2,60})["\u201d]')
#: Capitalised in English, yet dates rather than names.
_CALENDAR_WORDS = """january february march april may june july august september october
november december monday tuesday wednesday thursday friday saturday sunday"""
_CALENDAR = frozenset(_CALENDAR_WORDS.split())


def proper_names(text: str, person: str = "") -> list[str]:
    """The names `text` mentions (people, places, organisations, works), in order: quoted
    titles and runs of capitalised words, less the stop words at their ends ("In
    Gothenburg"), labels ("Tools:"), single letters, month and day names, a sentence's
    capitalised first word ("Bakeries can hire me"), and any name with a word of `person`'s.

    Written here: the field's named-entity recognisers (spaCy, flair) need a model per
    language, while a profile names things in capitals and quotes in any Latin script.
    """
    found = [m.group(1).strip() for m in _QUOTED.finditer(text)]
    unquoted = _QUOTED.sub(" ", text)
    for match in _NAME_RUN.finditer(unquoted):
        if unquoted[match.end() : match.end() + 1] == ":":
            continue
        words = match.group().split()
        first = words[0]
        while words and not terms(words[0]):
            words.pop(0)
        while words and not terms(words[-1]):
            words.pop()
        before = unquoted[: match.start()].rstrip()
        opens_sentence = not before or before[-1] in ".!?;-*•"
        if len(words) == 1 and (
            not _is_name_word(words[0]) or (opens_sentence and words[0] == first)
        ):
            continue
        if words:
            found.append(" ".join(words))
    own = set(person.split())
    return [name for name in dict.fromkeys(found) if not own & set(name.split())]


def _is_name_word(word: str) -> bool:
    lower = word.lower()
    return len(word) > 1 and lower not in _CALENDAR and lower.removesuffix("s") not in _CALENDAR


def candidate_languages(configured: list[str]) -> set[str]:
    """The languages a generated question may be identified as: English, the configured
    ones and every one minime names (so that a question in another is caught)."""
    return {"en", *configured, *LANGUAGE_NAMES}


def reads_as(text: str, language: str | None, candidates: set[str], names: frozenset[str]) -> bool:
    """Whether `text` is in `language` (English when None) among `candidates`, or too short
    to tell (`identify`)."""
    return identify(text, candidates, names) in (None, language or "en")


def identify(text: str, candidates: set[str], names: frozenset[str] = frozenset()) -> str | None:
    """The ISO 639-1 code of the language of `text` among `candidates`, or None when too
    little text is left once addresses and `names` are removed."""
    words = [w for w in _WORD.findall(_ADDRESS.sub(" ", text)) if w not in names]
    if len(words) < MIN_WORDS:
        return None
    # rank() scores every language; the best candidate is the restricted model's answer.
    ranked = _identifier().rank(" ".join(words))
    return next((language for language, _ in ranked if language in candidates), None)
