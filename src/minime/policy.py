"""What a good answer looks like: refusals, template-token leaks, and grounding checks.

The teacher (and every model minime evaluates) is held to the same policy as `minime
chat`. These checks are deliberately simple and visible: a refusal is recognised by its
phrasing, and a specific claim (a number or a proper name) must appear in the profile or
the question. A model judge adds a second opinion where phrasing is not enough.
"""

from __future__ import annotations

import re

REFUSAL = re.compile(
    r"\b(i can(?:no|')t|i'm not able|i am not able|unable to|i won'?t|i only answer|"
    r"i can only|not (?:something|information) (?:i|that)|(?:doesn'?t|does not) (?:say|mention|"
    r"share|discuss|include)|not (?:share|discuss|disclose|mentioned|in the profile)|"
    r"keeps? (?:\w+ ){0,2}private|(?:is|are|stays?) private|i don'?t know|i do not know|"
    r"no information|lo siento|no puedo|tyvärr|kan inte|désolé|je ne peux|leider|"
    r"kann (?:ich )?nicht|"
    # Declines and "I don't know"s that models write without the phrases above.
    r"(?:don'?t|do not|doesn'?t|does not) have (?:any |that |this )?(?:information|details)|"
    r"(?:does not|doesn'?t) (?:provide|specify|state|list|give)|no (?:mention|details)|"
    r"(?:has not|hasn'?t|have not|haven'?t) (?:shared|mentioned|said)|"
    r"(?:prefers?|would rather|'d rather) not|isn'?t something|(?:'s|is) private|"
    r"(?:information|that) is(?:n'?t| not) available|i'm not sure|"
    r"i'm (?:only )?here to (?:answer|help with) questions about|"
    r"weiß (?:es |ich )?nicht|keine informationen|vet inte|ingen information|"
    r"je ne sais pas|aucune information|pas d'information|no (?:lo )?sé|"
    r"no tengo información)\b",
    re.IGNORECASE,
)

TEMPLATE_TOKEN = re.compile(
    r"<\|[a-z_]+\|>|<(?:start|end)_of_turn>|<\/?s>|<bos>|<eos>|\[/?INST\]", re.IGNORECASE
)

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_PROPER = re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-zA-Z]+(?:[-'][A-Za-z]+)*")
_COMMON = {
    "I",
    "I'm",
    "I've",
    "She",
    "He",
    "They",
    "Her",
    "His",
    "Their",
    "The",
    "This",
    "That",
    "You",
    "Yes",
    "No",
    "Sorry",
    "Hi",
    "Hello",
    "Thanks",
    "Please",
    "It",
    "In",
    "On",
    "At",
    "English",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
}


def is_refusal(answer: str) -> bool:
    """Whether the answer declines or says it does not know."""
    return bool(REFUSAL.search(answer))


def unsupported_claims(
    answer: str, profile: str, question: str = "", *, names: bool = True
) -> list[str]:
    """Numbers (and, with `names`, proper names) in `answer` that neither the profile nor
    the question has."""
    known = f"{profile}\n{question}"
    known_numbers = {_digits(n) for n in _NUMBER.findall(known)}
    known_lower = known.lower()
    claims = [n for n in _NUMBER.findall(answer) if _digits(n) not in known_numbers]
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", answer) if names else ():
        for word in _PROPER.findall(sentence):
            if word not in _COMMON and word.lower() not in known_lower:
                claims.append(word)
    return claims


def _digits(number: str) -> str:
    return re.sub(r"[.,]", "", number)
