"""Step 1 of `minime data`: gather the real visitor prompts into one clean JSONL file.

Reads every file in `project.prompt_files` (.txt, .jsonl or .csv) and, if it exists, the
request log that `minime serve` appends to (`out/serve/requests.jsonl`). Writes
`out/data/collected.jsonl`: one `PromptRecord` per line, source "real", with whitespace
normalised, duplicates dropped and visitors' e-mail addresses and phone numbers redacted.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from minime.config import CONFIG_FILE
from minime.data.records import PromptRecord
from minime.errors import InputError
from minime.jsonl import read_jsonl, write_jsonl
from minime.layout import REQUEST_LOG
from minime.project import Project

CSV_COLUMNS = ("question", "prompt", "text")
"""Accepted names of a CSV file's prompt column (case-insensitive), in order of preference."""

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")

# A maximal run of digit groups, each joined by at most one separator, with an optional
# "+" and area codes in parentheses; `_is_phone` then decides. The group is atomic so that
# a run the look-ahead rejects is not retried shorter (that would match "1" in "1,200").
# The look-arounds keep it out of words, decimals and counts ("v2", "3.5", "1,200").
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w.,/+-])"
    r"(?>\+?(?:\(\d{1,4}\)|\d+)(?:[ .-]?(?:\(\d{1,4}\)|\d+))*)"
    r"(?![\w(]|[.,/-]\d)"
)
_DIGIT_GROUP = re.compile(r"\d+")
_YEAR = re.compile(r"(?:19|20)\d\d")

_Reader = Callable[[Path], Iterator[tuple[int, str]]]


class FileCounts(BaseModel):
    """How many prompts one input file gave."""

    path: str = Field(description="The file, relative to the project root where possible.")
    read: int = Field(description="Non-empty prompts found in the file.")
    kept: int = Field(description="Prompts written (the rest were duplicates).")


class CollectReport(BaseModel):
    """What `collect` read and wrote."""

    output: Path = Field(description="The JSONL file written.")
    files: list[FileCounts] = Field(description="Counts per input file, in reading order.")
    duplicates: int = Field(0, description="Prompts dropped as exact duplicates.")
    emails: int = Field(0, description="E-mail addresses redacted in the prompts written.")
    phones: int = Field(0, description="Phone numbers redacted in the prompts written.")
    written: int = Field(0, description="Records written.")


def collect(project: Project, dst: Path) -> CollectReport:
    """Write the project's real visitor prompts to `dst`, one `PromptRecord` per line.

    :param project: the persona project whose prompt files and request log are read.
    :param dst: the JSONL file to write (normally `out/data/collected.jsonl`); it is
        written atomically and nothing else is written.
    :returns: counts per input file, duplicates dropped, redactions and records written.
    :raises InputError: if a configured prompt file is missing or has an unknown type,
        or a line of any input is malformed (the message names file, line and field).
    """
    sources = []
    for path in project.prompt_files:
        if not path.is_file():
            raise InputError(f'{path}: prompt file not found (field "prompts" in {CONFIG_FILE})')
        sources.append((path, _reader(path)))
    log = project.root / REQUEST_LOG
    if log.is_file():
        sources.append((log, _read_request_log))

    # Read every input before writing, so a malformed line leaves no output at all.
    records: list[dict[str, Any]] = []
    files = []
    seen: set[str] = set()
    duplicates = emails = phones = 0
    for path, read in sources:
        origin = _origin(project.root, path)
        found = kept = 0
        for line, raw in _decoded(path, read):
            text = normalise(raw)
            if not text:
                continue
            found += 1
            text, n_emails, n_phones = redact(text)
            # Compare after redaction: two prompts that differ only in an address would
            # otherwise both be written, with the same text and so the same id.
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
            kept += 1
            emails += n_emails
            phones += n_phones
            record = PromptRecord.create(text, "real", origin=f"{origin}:{line}")
            records.append(record.model_dump())
        files.append(FileCounts(path=origin, read=found, kept=kept))
    written = write_jsonl(dst, records)
    return CollectReport(
        output=dst,
        files=files,
        duplicates=duplicates,
        emails=emails,
        phones=phones,
        written=written,
    )


def normalise(text: str) -> str:
    """Strip `text` and collapse each run of whitespace to one space."""
    return " ".join(text.split())


def redact(text: str) -> tuple[str, int, int]:
    """Replace e-mail addresses and phone numbers in `text` by placeholders.

    :returns: the redacted text, the number of e-mail addresses and of phone numbers.
    """
    text, emails = _EMAIL.subn(EMAIL_MASK, text)
    phones = 0

    def mask(match: re.Match[str]) -> str:
        nonlocal phones
        if not _is_phone(match.group()):
            return match.group()
        phones += 1
        return PHONE_MASK

    return _PHONE_CANDIDATE.sub(mask, text), emails, phones


def _is_phone(candidate: str) -> bool:
    """Whether a run of digit groups is a phone number rather than a year, count or date."""
    groups = _DIGIT_GROUP.findall(candidate)
    sizes = [len(group) for group in groups]
    digits = sum(sizes)
    # E.164 allows at most 15 digits; fewer than 7 is a year, a count or a short code.
    if not 7 <= digits <= 15:
        return False
    if candidate.startswith("+"):
        return True  # "+46 70 123 45 67": a leading "+" marks an international number
    area = re.search(r"\((\d+)\)", candidate)
    if area:
        # "(555) 123-4567", but not a year in brackets before a count: "(2022) 150".
        return digits >= 8 and not _YEAR.fullmatch(area.group(1))
    separators = set(re.findall(r"[ .-]", candidate))
    if "." in separators:
        # Dots join versions, dates and IP addresses; only the US "555.123.4567" is a phone.
        return separators == {"."} and sizes == [3, 3, 4]
    if all(_YEAR.fullmatch(group) for group in groups):
        return False  # "2019-2022", "2019 2020 2021"
    if sizes in ([4, 2, 2], [2, 2, 4]):
        return False  # dates: "2022-05-01", "01-05-2022"
    if len(groups) == 1:
        return digits >= 10  # "0701234567"; shorter bare numbers are ids or amounts
    if "-" in separators:
        return True  # "070-123 45 67", "555-123-4567", "123-4567"
    # Spaces alone also group thousands ("120 000 000") and follow years ("in 2022 150").
    thousands = sizes[0] <= 3 and all(size == 3 for size in sizes[1:])
    return len(groups) >= 3 and digits >= 9 and not thousands


def _origin(root: Path, path: Path) -> str:
    """How a record names its file: relative to the project root where possible."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _reader(path: Path) -> _Reader:
    """The function that reads prompts from a file of this type.

    :raises InputError: if the file type is not one of .txt, .jsonl, .csv.
    """
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl, ".csv": _read_csv}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InputError(
            f'{path}: unknown prompt file type "{path.suffix}" (field "prompts" in '
            f"{CONFIG_FILE}; use .txt, .jsonl or .csv)"
        )
    return reader


def _decoded(path: Path, read: _Reader) -> Iterator[tuple[int, str]]:
    """Yield what `read(path)` yields, turning a decoding error into an InputError.

    :raises InputError: if the file is not UTF-8 text.
    """
    try:
        yield from read(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _read_txt(path: Path) -> Iterator[tuple[int, str]]:
    """One prompt per line; blank lines and lines starting with "#" are skipped."""
    # utf-8-sig: editors on Windows often start the file with a byte-order mark.
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                yield number, text


def _read_jsonl(path: Path) -> Iterator[tuple[int, str]]:
    """Each line an object with a "prompt" string, or a chat "messages" list.

    :raises InputError: naming file, line and field, if a record has neither field, or
        a prompt or user message that is not a non-empty string.
    """
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        if "prompt" in record:
            yield number, _text(record["prompt"], where, "prompt")
        elif "messages" in record:
            messages = record["messages"]
            if not isinstance(messages, list):
                raise InputError(f'{where}: field "messages" must be a list of chat messages')
            users = 0
            for index, message in enumerate(messages):
                if isinstance(message, dict) and message.get("role") == "user":
                    users += 1
                    content = message.get("content")
                    yield number, _text(content, where, f"messages[{index}].content")
            if not users:
                raise InputError(f'{where}: field "messages" has no message with role "user"')
        else:
            raise InputError(
                f'{where}: field "prompt" is missing (give "prompt", or a chat "messages" list)'
            )


def _read_csv(path: Path) -> Iterator[tuple[int, str]]:
    """Rows of a CSV file with a header; the prompt column is named question, prompt or text.

    Empty cells are skipped: spreadsheets often end with blank rows.

    :raises InputError: naming file, line 1 and the field, if no column has such a name.
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise InputError(f'{path}:1: no header row (expected a column "question")')
        names = [name.strip().lower() for name in header]
        column = next((names.index(name) for name in CSV_COLUMNS if name in names), None)
        if column is None:
            found = ", ".join(f'"{name}"' for name in header) or "none"
            raise InputError(
                f'{path}:1: field "question" not found in the header (name the prompt column '
                f'"question", "prompt" or "text"; columns found: {found})'
            )
        end = reader.line_num
        for row in reader:
            # A quoted cell may span lines; a record is named by the line where it starts.
            start, end = end + 1, reader.line_num
            if column < len(row):
                yield start, row[column]


def _read_request_log(path: Path) -> Iterator[tuple[int, str]]:
    """The "question" of each request that `minime serve` logged.

    :raises InputError: naming file, line and field, if a line has no string "question".
    """
    for number, record in read_jsonl(path):
        question = record.get("question")
        if not isinstance(question, str):
            raise InputError(f'{path}:{number}: field "question" must be a string')
        # An empty question is a visitor pressing Enter, not a broken log: collect drops it.
        yield number, question


def _text(value: Any, where: str, field: str) -> str:
    """A prompt field's value, checked to be a non-empty string.

    :raises InputError: naming the place and field otherwise.
    """
    if not isinstance(value, str):
        raise InputError(f'{where}: field "{field}" must be a string, not {type(value).__name__}')
    if not value.strip():
        raise InputError(f'{where}: field "{field}" is empty')
    return value
