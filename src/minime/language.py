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


def identify(text: str, candidates: set[str], names: frozenset[str] = frozenset()) -> str | None:
    """The ISO 639-1 code of the language of `text` among `candidates`, or None when too
    little text is left once addresses and `names` are removed."""
    words = [w for w in _WORD.findall(_ADDRESS.sub(" ", text)) if w not in names]
    if len(words) < MIN_WORDS:
        return None
    # rank() scores every language; the best candidate is the restricted model's answer.
    ranked = _identifier().rank(" ".join(words))
    return next((language for language, _ in ranked if language in candidates), None)
