"""`minime data respond` killed with SIGKILL mid-way, then rerun: every prompt answered once."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from minime.config import DataConfig
from minime.data.records import PromptRecord
from minime.jsonl import load_jsonl, write_jsonl

from conftest import EXAMPLE, ROOT, Scripted, chat_completion_body


def test_sigkill_during_respond_then_rerun(scripted_server, tmp_path):
    project = tmp_path / "mara"
    project.mkdir()
    shutil.copy(EXAMPLE / "profile.md", project / "profile.md")
    teacher = f"openai:fake@{scripted_server.url}"
    (project / "minime.yaml").write_text(
        f"name: Mara Lindqvist\nmodels:\n  teacher: '{teacher}'\ndata:\n  judge: false\n"
    )
    prompts = [PromptRecord.create(f"Where does Mara work? ({i})", "real") for i in range(20)]
    out = project / "out" / "data"
    write_jsonl(out / "deduped.jsonl", (p.model_dump() for p in prompts))
    scripted_server.default = Scripted(
        200, chat_completion_body("Mara works at Verdant Loop."), delay=0.1
    )
    command = [sys.executable, "-m", "minime", "data", "respond", str(project)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out / "responses.answers.jsonl.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.exists() and partial.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    _, stderr = child.communicate()
    assert child.returncode == -signal.SIGKILL, stderr.decode()
    assert not (out / "responses.jsonl").exists()
    answered_before_kill = partial.read_text().count("\n")
    assert 5 <= answered_before_kill < 20

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    rows = load_jsonl(out / "responses.jsonl")
    assert sorted(r["id"] for r in rows) == sorted(p.id for p in prompts)
    answers = load_jsonl(out / "responses.answers.jsonl")
    assert len(answers) == len({a["id"] for a in answers}) == 20
    # Only requests in flight at the kill (at most data.concurrency) were sent twice.
    assert 20 <= len(scripted_server.requests) <= 20 + DataConfig().concurrency
    assert not list(Path(out).glob("*.partial"))


def test_cli_data_rejects_malformed_input_and_leaves_nothing(tmp_path):
    from typer.testing import CliRunner

    from minime.cli import app

    (tmp_path / "profile.md").write_text("# Ada\n\n- Ada builds bridges.\n")
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Where does Ada work?"}\n{"prompt": \n')
    result = CliRunner().invoke(app, ["data", "collect", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'prompts.jsonl'}:2: invalid JSON" in result.output.replace("\n", "")
    assert not (tmp_path / "out" / "data" / "collected.jsonl").exists()
    (tmp_path / "prompts.jsonl").unlink()
    (tmp_path / "prompts.csv").write_text("name,when\nAda,now\n")
    result = CliRunner().invoke(app, ["data", "collect", str(tmp_path)])
    assert result.exit_code == 1 and "prompts.csv:1" in result.output
    (tmp_path / "profile.md").write_text("\n")
    result = CliRunner().invoke(app, ["data", str(tmp_path)])
    assert result.exit_code == 1 and "the profile is empty" in result.output


def test_cli_data_needs_a_step_and_a_folder(tmp_path):
    from typer.testing import CliRunner

    from minime.cli import app

    result = CliRunner().invoke(app, ["data", "shuffle", str(tmp_path)])
    assert result.exit_code == 2
    (tmp_path / "profile.md").write_text("# Ada\n\n- Ada builds bridges.\n")
    result = CliRunner().invoke(app, ["data", "respond", str(tmp_path)])
    assert result.exit_code == 1
    assert "deduped.jsonl: missing; run `minime data dedup` first" in result.output
