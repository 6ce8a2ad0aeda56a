"""Does the student's answer carry the fact? The signal training stops on.

A question written about one profile fact has a reference answer from the teacher. The
fact's key terms are the words the fact and the reference share (numbers, names and
content words: what the question actually asked for); a student answer recalls the fact
when it contains every number among them and most of the rest. No model is needed, so
it runs at every evaluation.

The same matching serves the evaluation: `term_pattern` turns a key term into a
`must_contain` pattern, and `find` / `missing` are the one `must_contain` check.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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


def matched_terms(
    answer: str, fact: str, ignore: frozenset[str] = frozenset()
) -> tuple[int, float]:
    """How many of `fact`'s terms (less `ignore`) `answer` contains, and what share of them."""
    wanted = terms(fact, ignore)
    found = sum(_contains(answer, t) for t in wanted)
    return found, found / len(wanted) if wanted else 0.0


def states_other_fact(answer: str, fact: str, facts: Sequence[str], name: str) -> bool:
    """Whether `answer`, given for a question about `fact`, states none of it or rather
    another of `facts`: one whose terms it holds both more of and a larger share of. The
    overview a 1.5B teacher writes for any question ("Javier is the head baker and co-owner
    of ...") holds a few words of most facts and nearly all of the overview's own."""
    ignore = frozenset(terms(name))
    own, own_share = matched_terms(answer, fact, ignore)
    if own == 0:
        return True
    for other in facts:
        if other != fact:
            count, share = matched_terms(answer, other, ignore)
            if count > own and share > own_share:
                return True
    return False


def stem(term: str) -> str:
    """The part of a key term an answer must contain: a word of five letters or more loses
    up to two final letters (lead/leads, sing/singing); numbers and short words stay."""
    return term if term[0].isdigit() or len(term) < 5 else term[: max(4, len(term) - 2)]


def term_pattern(term: str) -> str:
    """A pattern for one key term, as `recalls` matches terms: a number with any thousands
    separator, or a word by its stem."""
    if term[0].isdigit():
        digits = re.sub(r"\D", "", term)
        return r"(?<![\d])" + r"[,. ]?".join(digits) + r"(?![\d])"
    return rf"(?<!\w){re.escape(stem(term))}"


def find(pattern: str, answer: str) -> str | None:
    """The text a `must_contain` or `must_not_contain` pattern matches in `answer`
    (case-insensitive), or None."""
    found = re.search(pattern, answer, re.IGNORECASE)
    return found.group(0) if found else None


def missing(patterns: list[str], answer: str) -> list[str]:
    """The `must_contain` patterns that `answer` does not match."""
    return [pattern for pattern in patterns if find(pattern, answer) is None]


def _contains(text: str, term: str) -> bool:
    """`term` in `text` as a word, allowing simple inflections (see `stem`)."""
    return re.search(rf"(?<![\w]){re.escape(stem(term))}", text, re.IGNORECASE) is not None
