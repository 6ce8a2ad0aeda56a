"""Does the student's answer carry the fact? The signal training stops on.

A question written about one profile fact has a reference answer from the teacher. The
fact's key terms are the words the fact and the reference share (numbers, names and
content words: what the question actually asked for); a student answer recalls the fact
when it contains every number among them and most of the rest. No model is needed, so
it runs at every evaluation.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[0-9][0-9,.]*[0-9]|[0-9]|[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'-]*")
_STOP_WORDS = """a about after again all also an and any are as at be because been before
being but by can could did do does doing for from had has have having he her here hers him his
how i if in into is it its just me more most my no not now of on once only or other our out over
own same she should so some such than that the their them then there these they this those
through to too under until up very was we were what when where which while who whom why will
with would you your yes she's he's it's i'm i've"""
_STOP = frozenset(_STOP_WORDS.split())
#: Share of the non-number key terms an answer must contain.
MIN_TERM_SHARE = 0.6


def terms(text: str, ignore: frozenset[str] = frozenset()) -> set[str]:
    """Lower-cased content words and numbers of `text` (stop words and `ignore` left out)."""
    words = {w.lower().rstrip(".,'-") for w in _WORD.findall(text)}
    return {w for w in words if w and w not in _STOP and w not in ignore and len(w) > 1}


def key_terms(fact: str, reference: str, name: str) -> set[str]:
    """The terms the fact and the teacher's reference answer share, less the person's name."""
    ignore = frozenset(terms(name))
    shared = {t for t in terms(fact, ignore) if _contains(reference, t)}
    return shared or terms(fact, ignore)


def recalls(answer: str, keys: set[str]) -> bool:
    """Whether `answer` has every number of `keys` and most of its other terms."""
    numbers = {k for k in keys if k[0].isdigit()}
    words = keys - numbers
    if not all(_contains(answer, n) for n in numbers):
        return False
    if not words:
        return True
    found = sum(_contains(answer, w) for w in words)
    return found >= MIN_TERM_SHARE * len(words)


def _contains(text: str, term: str) -> bool:
    """`term` in `text` as a word, allowing simple inflections (lead/leads, sing/singing)."""
    stem = term if term[0].isdigit() or len(term) < 5 else term[: max(4, len(term) - 2)]
    return re.search(rf"(?<![\w]){re.escape(stem)}", text, re.IGNORECASE) is not None
