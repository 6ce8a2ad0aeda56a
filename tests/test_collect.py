import json
import re
from pathlib import Path

import pytest

from minime.data.collect import CollectReport, FileCounts, collect, redact
from minime.data.records import record_id
from minime.errors import InputError
from minime.jsonl import load_jsonl
from minime.layout import REQUEST_LOG
from minime.project import Project, init_project


def make_project(root, files, prompts=None):
    """A starter project whose prompt files are `files` (name -> text) and nothing else."""
    init_project(root, "Ada Example")
    (root / "prompts.txt").unlink()
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    if prompts is not None:
        with (root / "minime.yaml").open("a") as handle:
            handle.write(f"prompts: {json.dumps(prompts)}\n")
    return Project.open(root)


def real(text, origin):
    """The record collect writes for one real prompt."""
    return {
        "id": record_id("real", text),
        "prompt": text,
        "category": "question",
        "source": "real",
        "origin": origin,
        "generator": None,
        "language": None,
        "fact": None,
    }


def files_under(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_txt_skips_blanks_and_comments_and_normalises(tmp_path):
    project = make_project(
        tmp_path,
        {
            "prompts.txt": "# questions from the contact form\n"
            "Where does Ada   work?\n"
            "\n"
            "   \t\n"
            "  what\tdoes she build?  \n"
            "  # an indented comment\n"
        },
    )
    dst = tmp_path / "out" / "data" / "collected.jsonl"
    report = collect(project, dst)
    assert load_jsonl(dst) == [
        real("Where does Ada work?", "prompts.txt:2"),
        real("what does she build?", "prompts.txt:5"),
    ]
    assert report == CollectReport(
        output=dst, files=[FileCounts(path="prompts.txt", read=2, kept=2)], written=2
    )


def test_jsonl_prompt_and_chat_messages(tmp_path):
    lines = [
        {"prompt": "  Where did Ada study? "},
        {
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": "Hi! Who is Ada?"},
                {"role": "assistant", "content": "An engineer."},
                {"role": "user", "content": "What  does she do?"},
            ]
        },
        {"prompt": "Does she speak French?", "label": "ignored"},
    ]
    text = json.dumps(lines[0]) + "\n\n" + "\n".join(json.dumps(line) for line in lines[1:])
    project = make_project(tmp_path, {"prompts.jsonl": text})
    dst = tmp_path / "collected.jsonl"
    collect(project, dst)
    assert load_jsonl(dst) == [
        real("Where did Ada study?", "prompts.jsonl:1"),
        real("Hi! Who is Ada?", "prompts.jsonl:3"),
        real("What does she do?", "prompts.jsonl:3"),
        real("Does she speak French?", "prompts.jsonl:4"),
    ]


def test_csv_finds_the_question_column_by_name(tmp_path):
    project = make_project(
        tmp_path,
        {
            "prompts.csv": "\ufeffID,Question,Notes\n"
            "1,Where does Ada live?,from email\n"
            '2,"Which projects,\nexactly?",spans two lines\n'
            "3,,empty cell: skipped\n"
            "4,Is she hiring?\n"
        },
    )
    dst = tmp_path / "collected.jsonl"
    report = collect(project, dst)
    assert load_jsonl(dst) == [
        real("Where does Ada live?", "prompts.csv:2"),
        real("Which projects, exactly?", "prompts.csv:3"),
        real("Is she hiring?", "prompts.csv:6"),
    ]
    assert report.files == [FileCounts(path="prompts.csv", read=3, kept=3)]


@pytest.mark.parametrize("header", ["prompt", "TEXT", " Prompt "])
def test_csv_accepts_prompt_or_text_columns(tmp_path, header):
    project = make_project(tmp_path, {"prompts.csv": f"n,{header}\n1,Who is Ada?\n"})
    collect(project, tmp_path / "c.jsonl")
    assert load_jsonl(tmp_path / "c.jsonl") == [real("Who is Ada?", "prompts.csv:2")]


def test_csv_prefers_question_over_text(tmp_path):
    project = make_project(tmp_path, {"prompts.csv": "text,question\nnoise,Who is Ada?\n"})
    collect(project, tmp_path / "c.jsonl")
    assert [r["prompt"] for r in load_jsonl(tmp_path / "c.jsonl")] == ["Who is Ada?"]


def test_request_log_of_serve_is_read_after_the_prompt_files(tmp_path):
    log = [
        {"time": "2025-01-01T10:00:00Z", "question": "Is Ada  available?", "latency_ms": 812},
        {"time": "2025-01-01T10:01:00Z", "question": "   ", "answer_chars": 0},
        {"time": "2025-01-01T10:02:00Z", "question": "Who is Ada?", "client": "web"},
    ]
    project = make_project(
        tmp_path,
        {
            "prompts.txt": "Who is Ada?\n",
            str(REQUEST_LOG): "".join(json.dumps(line) + "\n" for line in log),
        },
    )
    assert Path("out/serve/requests.jsonl") == REQUEST_LOG
    dst = tmp_path / "out" / "data" / "collected.jsonl"
    report = collect(project, dst)
    assert load_jsonl(dst) == [
        real("Who is Ada?", "prompts.txt:1"),
        real("Is Ada available?", "out/serve/requests.jsonl:1"),
    ]
    assert report.files == [
        FileCounts(path="prompts.txt", read=1, kept=1),
        # The blank question is dropped; the last one repeats prompts.txt.
        FileCounts(path="out/serve/requests.jsonl", read=2, kept=1),
    ]
    assert report.duplicates == 1
    assert report.written == 2


def test_duplicates_after_normalisation_keep_the_first(tmp_path):
    project = make_project(
        tmp_path,
        {
            "a.txt": "Where does Ada work?\nWhere  does Ada work? \nWhat is Canopy?\n",
            "b.jsonl": '{"prompt": "What is Canopy?"}\n{"prompt": "what is canopy?"}\n',
        },
        prompts=["a.txt", "b.jsonl"],
    )
    dst = tmp_path / "collected.jsonl"
    report = collect(project, dst)
    assert load_jsonl(dst) == [
        real("Where does Ada work?", "a.txt:1"),
        real("What is Canopy?", "a.txt:3"),
        # Not an exact duplicate: case differs.
        real("what is canopy?", "b.jsonl:2"),
    ]
    assert report.files == [
        FileCounts(path="a.txt", read=3, kept=2),
        FileCounts(path="b.jsonl", read=2, kept=1),
    ]
    assert report.duplicates == 2
    assert report.written == 3


@pytest.mark.parametrize(
    "phone",
    [
        "+46 70 123 45 67",
        "+46701234567",
        "+44 20 7946 0958",
        "+1 (555) 123-4567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "123-4567",
        "070-123 45 67",
        "070 123 45 67",
        "020 7946 0958",
        "0701234567",
    ],
)
def test_phone_numbers_are_redacted(phone):
    assert redact(f"Call me on {phone}, please.") == ("Call me on [phone], please.", 0, 1)
    assert redact(f"({phone})") == ("([phone])", 0, 1)


@pytest.mark.parametrize(
    "text",
    [
        "Did she join in 2022?",
        "Does Canopy have 1,200 users or 12,345,678?",
        "Is it version 3.11.4 or v2.0.1 or Python 3.12?",
        "She worked there 2019-2022, from 1999 to 2001, in 2019 2020 2021.",
        "The talk was on 2022-05-01 (or 01.05.2022).",
        "1 200 000 downloads, 120 000 000 people, in 2022 150 people, (2022) 150 seats",
        "Room 42, floor 7, ISO 8601, pi is 3.14159265, host 192.168.1.10",
        "Order 1234567 cost 1,234,567.89 kr",
    ],
)
def test_years_counts_versions_and_short_numbers_are_kept(text):
    assert redact(text) == (text, 0, 0)


def test_email_addresses_are_redacted():
    text = "Write to mara.lindqvist+web@verdant-loop.co.uk or a_b@x.io. Is @handle ok?"
    assert redact(text) == ("Write to [email] or [email]. Is @handle ok?", 2, 0)


def test_redactions_are_counted_in_the_report(tmp_path):
    project = make_project(
        tmp_path,
        {
            "prompts.txt": "I am jo@example.com, call +46 70 123 45 67\n"
            # Differs from line 1 only in the address: a duplicate once redacted.
            "I am al@example.org, call +46 70 123 45 67\n"
            "Since 2022 I have 1,200 users; my number is (555) 123-4567\n"
        },
    )
    dst = tmp_path / "collected.jsonl"
    report = collect(project, dst)
    assert load_jsonl(dst) == [
        real("I am [email], call [phone]", "prompts.txt:1"),
        real("Since 2022 I have 1,200 users; my number is [phone]", "prompts.txt:3"),
    ]
    assert (report.emails, report.phones, report.duplicates) == (1, 2, 1)


def test_collect_writes_only_dst(tmp_path):
    project = make_project(tmp_path, {"prompts.txt": "Who is Ada?\n"})
    before = files_under(tmp_path)
    dst = tmp_path / "out" / "data" / "collected.jsonl"
    collect(project, dst)
    assert files_under(tmp_path) == sorted([*before, dst.relative_to(tmp_path)])


@pytest.mark.parametrize(
    ("files", "prompts", "message"),
    [
        (
            {"prompts.jsonl": '{"prompt": "ok"}\n{"prompt": "unterminated\n'},
            None,
            r"prompts\.jsonl:2: invalid JSON",
        ),
        (
            {"prompts.jsonl": '{"prompt": "ok"}\n["a list"]\n'},
            None,
            r"prompts\.jsonl:2: expected a JSON object",
        ),
        (
            {"prompts.jsonl": '{"prompt": "ok"}\n\n{"question": "wrong field"}\n'},
            None,
            r'prompts\.jsonl:3: field "prompt" is missing \(give "prompt", or a chat "messages"',
        ),
        (
            {"prompts.jsonl": '{"prompt": "ok"}\n{"prompt": " \\t "}\n'},
            None,
            r'prompts\.jsonl:2: field "prompt" is empty',
        ),
        (
            {"prompts.jsonl": '{"prompt": 17}\n'},
            None,
            r'prompts\.jsonl:1: field "prompt" must be a string, not int',
        ),
        (
            {
                "prompts.jsonl": '{"messages": [{"role": "system", "content": "s"}, '
                '{"role": "user", "content": ""}]}\n'
            },
            None,
            r'prompts\.jsonl:1: field "messages\[1\]\.content" is empty',
        ),
        (
            {"prompts.jsonl": '{"messages": [{"role": "assistant", "content": "hi"}]}\n'},
            None,
            r'prompts\.jsonl:1: field "messages" has no message with role "user"',
        ),
        (
            {"prompts.jsonl": '{"messages": "Who is Ada?"}\n'},
            None,
            r'prompts\.jsonl:1: field "messages" must be a list',
        ),
        (
            {"prompts.csv": "id,body\n1,Who is Ada?\n"},
            None,
            r'prompts\.csv:1: field "question" not found .*columns found: "id", "body"\)',
        ),
        (
            {"prompts.csv": ""},
            None,
            r'prompts\.csv:1: no header row \(expected a column "question"',
        ),
        (
            {"notes.md": "Who is Ada?\n"},
            ["notes.md"],
            r'notes\.md: unknown prompt file type "\.md" \(field "prompts" in minime\.yaml',
        ),
        (
            {"prompts.txt": "Who is Ada?\n"},
            ["prompts.txt", "gone.txt"],
            r'gone\.txt: prompt file not found \(field "prompts" in minime\.yaml\)',
        ),
        (
            {"prompts.txt": b"caf\xe9?\n"},
            None,
            r"prompts\.txt: not UTF-8 text \(invalid continuation byte at byte 3\)",
        ),
        (
            {str(REQUEST_LOG): '{"time": "t", "question": "ok"}\n{"time": "t", "q": "x"}\n'},
            None,
            r'out/serve/requests\.jsonl:2: field "question" must be a string',
        ),
    ],
)
def test_malformed_input_names_file_line_and_field_and_writes_nothing(
    tmp_path, files, prompts, message
):
    project = make_project(tmp_path, files, prompts)
    before = files_under(tmp_path)
    dst = tmp_path / "out" / "data" / "collected.jsonl"
    with pytest.raises(InputError, match=message) as caught:
        collect(project, dst)
    # The path as given, so the user can open it from where they ran minime.
    assert str(caught.value).startswith(str(tmp_path) + "/")
    assert not dst.exists()
    assert files_under(tmp_path) == before


def test_an_error_keeps_the_previous_output(tmp_path):
    project = make_project(tmp_path, {"prompts.jsonl": '{"prompt": ""}\n'})
    dst = tmp_path / "collected.jsonl"
    dst.write_text("previous\n")
    with pytest.raises(InputError):
        collect(project, dst)
    assert dst.read_text() == "previous\n"


def test_example_persona_collects_its_20_prompts(example_project, tmp_path):
    dst = tmp_path / "collected.jsonl"
    report = collect(example_project, dst)
    records = load_jsonl(dst)
    assert len(records) == report.written == 20
    assert records[0] == real("Where does Mara work?", "prompts.txt:1")
    assert records[-1]["origin"] == "prompts.txt:20"
    assert len({r["id"] for r in records}) == 20
    assert report.files == [FileCounts(path="prompts.txt", read=20, kept=20)]
    assert (report.duplicates, report.emails, report.phones) == (0, 0, 0)
    assert not re.search(r"\[(email|phone)\]", dst.read_text())
