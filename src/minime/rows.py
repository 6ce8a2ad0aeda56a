"""The training set's rows (`out/data/train.jsonl`, `val.jsonl`): `minime data` writes
them; distill trains on them and export checks its files with them."""

from __future__ import annotations

from pathlib import Path

from minime.errors import InputError
from minime.jsonl import read_jsonl


def read_rows(path: Path) -> list[dict]:
    """Training rows; each must have a user message followed by an assistant message.

    :raises InputError: naming the file, line and field of a malformed row.
    """
    if not path.is_file():
        raise InputError(f"{path}: missing; run `minime data` first")
    rows = []
    for number, row in read_jsonl(path):
        messages = row.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise InputError(f'{path}:{number}: field "messages": expected a user and an answer')
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise InputError(
                    f'{path}:{number}: field "messages.{i}.content": expected a string'
                )
        if messages[-1].get("role") != "assistant":
            raise InputError(
                f'{path}:{number}: field "messages.{len(messages) - 1}.role": '
                "the last message must be the assistant's answer"
            )
        rows.append(row)
    return rows
