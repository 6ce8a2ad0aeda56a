"""A rendered chat prompt split into the template's own text and the messages' text, so
that only the template's markers are tokenized as control tokens.

Tokenizing the whole rendered prompt with special tokens parsed lets a message that
contains `<|im_start|>system` write the real control token and forge a turn. Message
text must instead be tokenized as plain text, as a tokenizer does with user input.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from minime.backends.base import Message

_MARK = "\ue000{}\ue001"  # private-use characters: no template writes or trims them
_MARK_SPLIT = re.compile("\ue000(\\d+)\ue001")


def prompt_parts(
    render: Callable[[list[Message]], str], messages: list[Message]
) -> list[tuple[str, bool]]:
    """The prompt `render(messages)` as (text, is_message_text) parts, in order.

    The template is rendered a second time with a marker in place of each message's
    content, which shows where each message's text lands; the text there is taken from
    the real rendering, so a template that trims the content (Gemma's does) keeps
    doing so. Should a template transform the text beyond trimming, the message's text is
    used as given, in its marker's place.
    """
    prompt = render(messages)
    marked = [{**message, "content": _MARK.format(i)} for i, message in enumerate(messages)]
    pieces = _MARK_SPLIT.split(render(marked))  # template, index, template, index, ...
    aligned = _align(prompt, pieces, messages)
    if aligned is not None:
        return aligned
    return [
        (messages[int(piece)]["content"], True) if k % 2 else (piece, False)
        for k, piece in enumerate(pieces)
        if piece
    ]


def _align(
    prompt: str, pieces: list[str], messages: list[Message]
) -> list[tuple[str, bool]] | None:
    parts: list[tuple[str, bool]] = []
    pos = 0
    for k, piece in enumerate(pieces):
        if k % 2 == 0:
            if not prompt.startswith(piece, pos):
                return None
            if piece:
                parts.append((piece, False))
            pos += len(piece)
            continue
        content = messages[int(piece)]["content"]
        after = pieces[k + 1]
        for text in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
            if prompt.startswith(text, pos) and prompt.startswith(after, pos + len(text)):
                break
        else:
            return None
        if text:
            parts.append((text, True))
        pos += len(text)
    return parts if pos == len(prompt) else None


def split_markers(text: str, markers: list[str]) -> list[tuple[str, bool]]:
    """`text` as (piece, is_marker) parts, where markers are the given strings, in the
    order they occur (`markers` as the tokenizer found them, in order)."""
    parts: list[tuple[str, bool]] = []
    pos = 0
    for marker in markers:
        found = text.find(marker, pos)
        if found < 0:
            continue
        if found > pos:
            parts.append((text[pos:found], False))
        parts.append((marker, True))
        pos = found + len(marker)
    if pos < len(text):
        parts.append((text[pos:], False))
    return parts


def plain_runs(parts: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Merge neighbouring plain pieces (is_marker False) into one run each."""
    runs: list[tuple[str, bool]] = []
    for piece, is_marker in parts:
        if runs and not is_marker and not runs[-1][1]:
            runs[-1] = (runs[-1][0] + piece, False)
        else:
            runs.append((piece, is_marker))
    return runs
