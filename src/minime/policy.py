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
    r"weiß (?:es |ich )?nicht|keine informationen|vet (?:jag )?inte|ingen information|"
    r"je ne sais pas|aucune information|pas d'information|no (?:lo )?sé|"
    r"no tengo información)\b",
    re.IGNORECASE,
)

TEMPLATE_TOKEN = re.compile(
    r"<\|[a-z_]+\|>|<(?:start|end)_of_turn>|<\/?s>|<bos>|<eos>|\[/?INST\]", re.IGNORECASE
)

#: Number words that a profile may write where an answer writes the digits ("four" -> 4).
_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {"once": 1, "twice": 2, "dozen": 12, "hundred": 100}
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


#: What the assistant says of itself ("I'm not sure", "I have no information"), unlike the
#: person's "I am not looking for a job" or "I have no pets".
_ASSISTANT_UNSURE = r"(?:sure|able|allowed|aware|certain)"
_ASSISTANT_LACKS = r"(?:information|details|data|record|access|way)"
#: The person's own voice ("I live in ...", "my team"): the assistant speaks about them.
_FIRST_PERSON = re.compile(
    rf"\b(?:my|mine|myself|me|(?-i:I)(?!'m (?:not {_ASSISTANT_UNSURE}|sorry|afraid)| (?:don'?t|"
    rf"do not|can'?t|cannot|can only|only|am not {_ASSISTANT_UNSURE}|am sorry|am afraid|"
    rf"have no {_ASSISTANT_LACKS}))|ich|mich|mir|meine?[mnrs]?|"
    r"je(?! ne)|j'(?:ai|habite|étais)|moi|mon|jag(?! vet inte)|mig|mitt|mina|yo|mis?|"
    # Spanish and Portuguese drop the pronoun: "Soy un ciclista", "Tenho dois gatos".
    r"soy|estoy|tengo|hablo|vivo|escribo|enseño|sou|estou|tenho|moro|falo)\b",
    re.IGNORECASE,
)
#: "Our best-known bread", "nuestra panadería": the person's voice, unless the visitor's
#: own turn says it too ("Would Mara speak at our meetup?").
_FIRST_PERSON_PLURAL = re.compile(
    r"\b(?:our|ours|nuestr[oa]s?|notre|nos|unser(?:e[mnrs]?)?|vår|vårt|våra|nosso|nossa)\b",
    re.IGNORECASE,
)


def speaks_as_person(answer: str, question: str = "") -> bool:
    """Whether the answer speaks as the person ("I work at ...", "our bakery") instead of
    about them; a plural "our" the visitor's `question` also says is theirs."""
    if _FIRST_PERSON.search(answer):
        return True
    return bool(_FIRST_PERSON_PLURAL.search(answer)) and not _FIRST_PERSON_PLURAL.search(question)


def is_refusal(answer: str) -> bool:
    """Whether the answer declines or says it does not know."""
    return bool(REFUSAL.search(answer))


def unsupported_claims(
    answer: str, profile: str, question: str = "", *, names: bool = True
) -> list[str]:
    """Numbers (and, with `names`, proper names) in `answer` that neither the profile nor
    the question has."""
    known = f"{profile}\n{question}"
    spelled = {str(n) for w, n in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", known, re.I)}
    known_numbers = {_digits(n) for n in _NUMBER.findall(known)} | spelled
    known_lower = known.lower()
    claims = [n for n in _NUMBER.findall(answer) if _digits(n) not in known_numbers]
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", answer) if names else ():
        for word in _PROPER.findall(sentence):
            word = re.sub(r"'s$", "", word)
            if word not in _COMMON and word.lower() not in known_lower:
                claims.append(word)
    return claims


def profile_details(answer: str, profile: str, question: str, person: str) -> list[str]:
    """Numbers and names of the profile that `answer` states and `question` does not ask
    about (the person's own name aside): what makes a decline also an answer."""
    asked = f"{question}\n{person}".lower()
    profile_lower = profile.lower()
    known_numbers = {_digits(n) for n in _NUMBER.findall(profile)}
    found = [n for n in _NUMBER.findall(answer) if _digits(n) in known_numbers and n not in asked]
    for word in _PROPER.findall(answer):
        word = re.sub(r"'s$", "", word)
        lower = word.lower()
        if word not in _COMMON and lower in profile_lower and lower not in asked:
            found.append(word)
    return found


def _digits(number: str) -> str:
    return re.sub(r"[.,]", "", number)
