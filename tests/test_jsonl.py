import pytest

from minime.errors import InputError
from minime.jsonl import ResumableJsonl, load_jsonl


def test_resumes_after_a_cut_last_line(tmp_path):
    out = ResumableJsonl(tmp_path / "r.jsonl")
    out.append({"id": "a", "x": 1})
    out.close()
    with out.partial.open("a") as handle:
        handle.write('{"id": "b", "x"')  # a kill mid-write
    again = ResumableJsonl(tmp_path / "r.jsonl")
    assert set(again.done) == {"a"}
    again.append({"id": "b", "x": 2})
    assert set(again.finish()) == {"a", "b"}
    assert load_jsonl(tmp_path / "r.jsonl") == [{"id": "a", "x": 1}, {"id": "b", "x": 2}]


def test_a_finished_file_is_reused_and_extended(tmp_path):
    out = ResumableJsonl(tmp_path / "r.jsonl")
    out.append({"id": "a"})
    out.finish()
    again = ResumableJsonl(tmp_path / "r.jsonl")
    assert set(again.done) == {"a"}
    again.append({"id": "b"})
    again.finish()
    assert [r["id"] for r in load_jsonl(again.path)] == ["a", "b"]


def test_a_damaged_middle_line_is_an_error(tmp_path):
    partial = tmp_path / "r.jsonl.partial"
    partial.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(InputError, match=r"r\.jsonl\.partial:2: unreadable record"):
        ResumableJsonl(tmp_path / "r.jsonl")
