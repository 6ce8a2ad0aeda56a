"""A new user's first hour: which model answers, warnings instead of silent fallbacks, input
faults as one line, model specs checked early with their minime.yaml line, progress when
piped, and the CLI's conventions."""

import json
import os
import subprocess
import sys
import textwrap
import time
from typing import ClassVar

import pytest
from typer.testing import CliRunner

import minime.backends
import minime.build
import minime.data
import minime.stamps
from minime.backends import ChatBackend, Delta, Usage
from minime.cli import app
from minime.layout import STAMP
from minime.project import Project, init_project

PROFILE = "# Ada Example\n\n## Work\n- Ada builds bridges at Span & Co.\n"


class Fake(ChatBackend):
    """A chat backend that records the model it was opened for and what it was sent."""

    opened: ClassVar[list] = []
    sent: ClassVar[list] = []

    def __init__(self, model, **options):
        self.name = model.spec
        Fake.opened.append(model)

    def stream(self, messages, params):
        Fake.sent.append(messages)
        yield Delta(text="Ada builds bridges.")
        yield Delta(text="", finish_reason="stop", usage=Usage(3, 4))


@pytest.fixture
def fake_backend(monkeypatch):
    Fake.opened, Fake.sent = [], []
    monkeypatch.setattr(minime.backends, "load_backend", lambda model, **options: Fake(model))
    return Fake


@pytest.fixture
def project_dir(tmp_path):
    root = tmp_path / "ada"
    root.mkdir()
    (root / "profile.md").write_text(PROFILE)
    return root


def fake_gguf(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


def export(root, quants=("q8_0", "q4_k_m")):
    folder = root / "out" / "export"
    files = [{"quant": q, "path": fake_gguf(folder / f"ada.{q}.gguf").name} for q in quants]
    (folder / "export.json").write_text(json.dumps({"default": quants[0], "files": files}))
    return folder


def run(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


# Which model answers


def test_chat_answers_with_the_exported_student_without_the_profile(project_dir, fake_backend):
    folder = export(project_dir)
    result = run("chat", project_dir, "What does Ada build?")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert "distilled student" in first and "ada.q8_0.gguf" in first
    assert fake_backend.opened[0].path == folder / "ada.q8_0.gguf"
    assert fake_backend.sent == [[{"role": "user", "content": "What does Ada build?"}]]
    assert "warning" not in result.output


def test_chat_quant_picks_another_exported_file(project_dir, fake_backend):
    folder = export(project_dir)
    result = run("chat", project_dir, "Hi?", "--quant", "q4_k_m")
    assert result.exit_code == 0, result.output
    assert fake_backend.opened[0].path == folder / "ada.q4_k_m.gguf"


def test_chat_with_a_gguf_path_answers_as_it_is(project_dir, fake_backend, tmp_path):
    gguf = fake_gguf(tmp_path / "models" / "mine.gguf")
    result = run("chat", project_dir, "Hi?", "--model", gguf)
    assert result.exit_code == 0, result.output
    assert "as it is" in result.output.splitlines()[0]
    assert fake_backend.opened[0].path == gguf
    assert fake_backend.sent[0][0]["role"] == "user"  # no profile


def test_chat_profile_puts_the_profile_in_the_prompt(project_dir, fake_backend, tmp_path):
    export(project_dir)
    gguf = fake_gguf(tmp_path / "mine.gguf")
    result = run("chat", project_dir, "Hi?", "--model", gguf, "--profile")
    assert result.exit_code == 0, result.output
    assert "with the profile in its prompt" in result.output.splitlines()[0]
    system = fake_backend.sent[0][0]
    assert system["role"] == "system" and "Span & Co." in system["content"]


def test_chat_without_an_export_falls_back_with_a_warning(project_dir, fake_backend):
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "no exported student yet" in result.output
    assert "qwen2.5-coder-1.5b-instruct with the profile" in result.output
    assert fake_backend.sent[0][0]["role"] == "system"


def test_chat_warns_when_the_profile_changed_since_training(project_dir, fake_backend):
    export(project_dir)
    project = Project.open(project_dir)
    stamp = project.out_dir("data") / STAMP
    stamp.write_text(json.dumps({"complete": True, "inputs": "x", "profile": "0" * 64}))
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 0, result.output
    assert "changed since the student was trained" in result.output.replace("\n", " ")
    # After a build with this profile, no warning.
    minime.stamps.write_stamp(
        project, "data", {"complete": True, "profile": minime.stamps.sha(PROFILE.strip().encode())}
    )
    assert "changed since" not in run("chat", project_dir, "Hi?").output


def test_deploy_without_an_export_warns(project_dir, monkeypatch):
    import minime.serve
    from minime.serve import DeployReport

    def fake_deploy(project, quant=None):
        return DeployReport(
            folder=project.root / "out" / "deploy",
            mode="profile-prompted",
            model="model/x.gguf",
            model_bytes=2**30,
            command=[],
            gcloud="gcloud run deploy",
        )

    monkeypatch.setattr(minime.serve, "deploy", fake_deploy)
    result = run("deploy", project_dir)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "the image serves models.chat" in result.output


# Input faults: one line, no traceback


@pytest.mark.parametrize("name", ["profile.md", "minime.yaml"])
def test_non_utf8_input_is_one_line(project_dir, name):
    (project_dir / name).write_bytes("# Ada\nname: Ad\xe9\n".encode("latin-1"))
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 1
    assert f"{name}:2:9: not UTF-8 text (byte 0xe9)" in result.output
    assert "Traceback" not in result.output


def test_non_utf8_questions_file_names_its_line(tmp_path):
    from minime.errors import InputError
    from minime.jsonl import load_jsonl

    path = tmp_path / "questions.jsonl"
    path.write_bytes(b'{"q": "a"}\n{"q": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"questions\.jsonl:2:11: not UTF-8"):
        load_jsonl(path)


def test_a_folder_where_the_profile_should_be(project_dir):
    (project_dir / "profile.md").unlink()
    (project_dir / "profile.md").mkdir()
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 1 and "profile.md: is a folder; expected a file" in result.output


def test_a_file_that_is_not_a_gguf(project_dir, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("<html>404</html>")
    result = run("chat", project_dir, "Hi?", "--model", bad)
    assert result.exit_code == 1 and "not a GGUF file" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_openai_url_fails_at_once(project_dir):
    started = time.monotonic()
    result = run("chat", project_dir, "Hi?", "--model", "openai:m@http://127.0.0.1:9/v1")
    assert result.exit_code == 1
    assert "cannot connect to 127.0.0.1:9" in result.output
    assert time.monotonic() - started < 5


def test_ctrl_c_is_one_line(project_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(minime.build, "build", interrupted)
    result = run("build", project_dir)
    assert result.exit_code == 130
    assert "interrupted; finished work is kept" in result.output
    assert "Traceback" not in result.output


# Model specs: checked first, with their line


def test_a_misspelt_student_fails_build_before_any_stage(project_dir, monkeypatch):
    (project_dir / "minime.yaml").write_text("name: Ada\nmodels:\n  student: smollm2-135m\n")
    monkeypatch.setattr(minime.data, "build_dataset", lambda *a: pytest.fail("data ran"))
    result = run("build", project_dir)
    assert result.exit_code == 1
    output = result.output.replace("\n", "")
    assert "minime.yaml:3: models.student: smollm2-135m: unknown model" in output
    assert "did you mean smollm2-135m-instruct?" in output


def test_a_misspelt_chat_model_names_its_line(project_dir):
    (project_dir / "minime.yaml").write_text("models:\n  chat: qwen2.5-coder-1.5b\n")
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 1
    assert "minime.yaml:2: models.chat: qwen2.5-coder-1.5b: unknown model" in result.output


def test_a_missing_gguf_is_file_not_found(project_dir):
    result = run("chat", project_dir, "Hi?", "--model", "models/nope.gguf")
    assert result.exit_code == 1 and "models/nope.gguf: file not found" in result.output


def test_data_does_not_check_the_student(project_dir, monkeypatch):
    (project_dir / "minime.yaml").write_text("models:\n  student: nope\n")
    monkeypatch.setattr(minime.data, "build_dataset", lambda project, steps: {})
    result = run("data", "split", project_dir)
    assert result.exit_code == 0, result.output


# A first run: init, config, the starter profile


def test_init_prints_next_steps_and_build_refuses_the_starter(tmp_path):
    result = run("init", tmp_path / "me")
    assert result.exit_code == 0
    assert "Next:" in result.output and "minime build" in result.output
    result = run("build", tmp_path / "me")
    assert result.exit_code == 1
    assert "profile.md:3: the profile is still the starter text" in result.output.replace("\n", "")


def test_build_refuses_the_starter_name(tmp_path):
    init_project(tmp_path, "Your Name")
    (tmp_path / "profile.md").write_text("# Your Name\n\n- Builds bridges.\n")
    result = run("build", tmp_path)
    assert result.exit_code == 1 and "the name is still 'Your Name'" in result.output


def test_config_lists_every_setting_with_default_and_source(tmp_path):
    init_project(tmp_path, "Ada")
    (tmp_path / "minime.yaml").write_text("name: Ada\ndistill:\n  learning_rate: 0.001\n")
    result = run("config", tmp_path)
    assert result.exit_code == 0, result.output
    assert "distill.learning_rate: 0.001  (minime.yaml:3; default 0.0003)" in result.output
    assert "Peak learning rate." in result.output
    assert "serve.port: 8000  (default)" in result.output
    settings = json.loads(run("config", tmp_path, "--json", "--changed").output)
    assert [s["key"] for s in settings] == ["name", "distill.learning_rate"]


# Piped progress


def slow_tasks(n, seconds):
    def task():
        time.sleep(seconds)
        return {"ok": True}

    return [(str(i), task) for i in range(n)]


def test_a_piped_build_prints_stage_lines_and_a_heartbeat(project_dir, monkeypatch):
    import minime.progress
    from minime.tasks import run_tasks

    monkeypatch.setattr(minime.progress, "HEARTBEAT_SECONDS", 0.1)

    def data(project, steps):
        if steps == ("respond",):
            run_tasks(project.out_dir("data") / "r.jsonl", slow_tasks(2, 0.35), "teacher answers")
            raise SystemExit(0)  # the build need not go on
        return {}

    monkeypatch.setattr(minime.data, "build_dataset", data)
    monkeypatch.setattr(minime.build, "STAGE_ROLES", dict.fromkeys(minime.build.STAGES, ()))
    result = run("build", project_dir)
    lines = result.output.splitlines()
    assert "data: running (first run)" in lines
    assert "data collect: running" in lines
    assert "teacher answers: 2 to do" in lines
    assert "teacher answers: 0/2 done, 0 s" in lines  # a heartbeat while one slow task runs
    assert any(line.startswith("teacher answers: done, 2/2 in") for line in lines)


def test_progress_lines_reach_a_real_pipe(tmp_path):
    script = textwrap.dedent(
        f"""
        import time
        import minime.progress
        from minime.tasks import run_tasks
        minime.progress.HEARTBEAT_SECONDS = 0.1
        def task():
            time.sleep(0.3)
            return {{}}
        run_tasks(__import__("pathlib").Path({str(tmp_path / "t.jsonl")!r}),
                  [(str(i), task) for i in range(2)], "generating")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    lines = done.stderr.splitlines()
    assert lines[0] == "generating: 2 to do"
    assert any(line.startswith("generating: 0/2 done") for line in lines)
    assert lines[-1].startswith("generating: done, 2/2 in")


# CLI conventions


@pytest.mark.parametrize(
    "command",
    [
        "init",
        "config",
        "models",
        "chat",
        "data",
        "distill",
        "export",
        "eval",
        "build",
        "report",
        "serve",
        "deploy",
    ],
)
def test_every_command_takes_dash_h(command):
    result = run(command, "-h")
    assert result.exit_code == 0 and "Usage:" in result.output
    assert "<bool>" not in result.output


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and result.output.startswith("minime ")


def test_choices_are_listed_and_checked(project_dir):
    assert "sft|kd|context" in run("distill", "-h").output
    assert "q8_0|q6_k" in run("chat", "-h").output
    result = run("distill", project_dir, "--method", "dpo")
    assert result.exit_code == 2 and "dpo" in result.output


def test_verify_and_no_verify_exclude_each_other(project_dir):
    result = run("export", project_dir, "--verify", "--no-verify")
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_export_method_reads_the_methods_distill_folder(project_dir, monkeypatch):
    import minime.export

    seen = []
    monkeypatch.setattr(minime.export, "verify", lambda project, source: seen.append(source))
    result = run("export", project_dir, "--method", "sft", "--verify")
    assert result.exit_code == 0, result.output
    assert seen == [project_dir / "out" / "distill-sft" / "model"]


def test_commands_are_listed_in_pipeline_order():
    output = run("-h").output
    names = [line.split()[0] for line in output.split("Commands:")[1].splitlines() if line.strip()]
    assert names.index("data") < names.index("distill") < names.index("export")
    assert names.index("export") < names.index("eval") < names.index("build")
    assert names[0] == "init"


def test_models_keeps_the_names_whole_at_80_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    import minime.cli

    monkeypatch.setattr(minime.cli.console, "width", 80)
    output = run("models").output
    assert "qwen2.5-coder-1.5b-instruct" in output and "smollm2-135m-instruct" in output


def test_piped_runs_turn_the_libraries_progress_bars_off(monkeypatch):
    """Piped (as here), transformers' and the hub's bars would fill the log."""
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")  # undone after the test
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    assert run("models").exit_code == 0
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


# serve: one meaning of --model, and it says what it serves


@pytest.fixture
def served(monkeypatch):
    import minime.serve

    calls = []
    monkeypatch.setattr(
        minime.serve, "serve", lambda target, config, **kw: calls.append((target, kw))
    )
    return calls


def test_serve_says_it_serves_the_export(project_dir, served):
    export(project_dir)
    result = run("serve", project_dir)
    assert result.exit_code == 0, result.output
    assert "serving the distilled student" in result.output
    assert served == [(project_dir, {"quant": None, "request_log": None})]


def test_serve_without_an_export_warns(project_dir, served):
    result = run("serve", project_dir)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "serving models.chat" in result.output
    assert served[0][1]["model"] == "qwen2.5-coder-1.5b-instruct"


def test_serve_model_alone_serves_it_without_the_profile(project_dir, served, tmp_path):
    gguf = fake_gguf(tmp_path / "mine.gguf")
    result = run("serve", project_dir, "--model", gguf)
    assert result.exit_code == 0, result.output
    assert served == [(gguf, {"request_log": None})]
    result = run("serve", project_dir, "--model", gguf, "--profile")
    assert served[1] == (project_dir, {"model": str(gguf), "request_log": None})


def test_data_warns_early_about_a_bad_student(project_dir, monkeypatch):
    (project_dir / "minime.yaml").write_text("models:\n  student: smollm2\n")
    monkeypatch.setattr(minime.data, "build_dataset", lambda project, steps: {})
    result = run("data", "split", project_dir)
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", "")
    assert "warning:" in output and "minime.yaml:2: models.student: smollm2" in output
    assert "did you mean smollm2-135m-instruct?" in output


def test_a_profile_prompted_image_serves_with_the_profile(project_dir, tmp_path):
    chat = fake_gguf(tmp_path / "chat.gguf")
    (project_dir / "minime.yaml").write_text(f"models:\n  chat: {chat}\n")
    result = run("deploy", project_dir)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output
    dockerfile = (project_dir / "out" / "deploy" / "Dockerfile").read_text()
    command = json.loads(
        next(line for line in dockerfile.splitlines() if line.startswith("CMD "))[4:]
    )
    assert "--model model/chat.gguf --profile" in command[2]


def test_piped_tables_are_plain_and_models_has_json():
    output = run("models").output
    assert "┃" not in output and "| name " in output
    models = json.loads(run("models", "--json").output)
    assert "smollm2-135m-instruct" in [m["name"] for m in models]


def test_overrides_are_checked_and_reach_the_stage(project_dir, monkeypatch):
    import minime.distill

    result = run("distill", project_dir, "--learning-rate", "5")
    assert result.exit_code == 2 and "--learning-rate: Input should be less than" in result.output
    seen = []
    monkeypatch.setattr(
        minime.distill, "distill", lambda project, **kw: seen.append(project.config) or None
    )
    result = run("distill", project_dir, "--learning-rate", "0.001", "--max-minutes", "5")
    assert result.exit_code == 0, result.output
    assert seen[0].distill.learning_rate == 0.001 and seen[0].distill.max_minutes == 5


def test_build_dry_run_runs_nothing(project_dir, monkeypatch):
    monkeypatch.setattr(minime.data, "build_dataset", lambda *a: pytest.fail("data ran"))
    result = run("build", project_dir, "--dry-run", "--from", "distill")
    assert result.exit_code == 0, result.output
    assert "| distill | run   | first run" in result.output and "| data " not in result.output


def test_data_run_by_hand_records_the_profile_it_answered_from(
    project_dir, monkeypatch, fake_backend
):
    export(project_dir)
    monkeypatch.setattr(minime.data, "build_dataset", lambda project, steps: {})
    assert run("data", "respond", project_dir).exit_code == 0
    result = run("chat", project_dir, "Hi?")
    assert result.exit_code == 0 and "changed since" not in result.output
    (project_dir / "profile.md").write_text(PROFILE + "- Ada moved to Malmö.\n")
    result = run("chat", project_dir, "Hi?")
    output = result.output.replace("\n", " ")
    assert result.exit_code == 0
    assert "changed since the student was trained" in output and "profile.sha256" in output


@pytest.mark.integration
def test_chat_with_a_real_exported_student_and_gguf_path(project_dir):
    import os

    from conftest import bundled_model_path

    gguf = bundled_model_path("smollm2-135m-instruct")
    folder = project_dir / "out" / "export"
    folder.mkdir(parents=True)
    os.symlink(gguf, folder / "ada.q8_0.gguf")
    files = [{"quant": "q8_0", "path": "ada.q8_0.gguf"}]
    (folder / "export.json").write_text(json.dumps({"default": "q8_0", "files": files}))
    for extra in ([], ["--model", str(gguf)]):
        result = run("chat", project_dir, "What does Ada build?", "--max-tokens", "8", *extra)
        assert result.exit_code == 0, result.output
        assert result.output.count("A:") == 1
        first = result.output.splitlines()[0]
        assert ("distilled student" if not extra else "as it is") in first


def test_a_trained_student_without_an_export_is_pointed_to(project_dir, fake_backend):
    model = project_dir / "out" / "distill" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    output = run("chat", project_dir, "Hi?").output.replace("\n", " ")
    assert "a trained student is in" in output and "minime export" in output


def test_build_json_for_scripts(project_dir):
    result = run("build", project_dir, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    planned = json.loads(result.output)
    assert [p["stage"] for p in planned] == ["data", "distill", "export", "eval"]
    assert planned[0] == {"stage": "data", "ran": True, "seconds": 0.0, "why": "first run"}


def test_an_unreachable_teacher_fails_data_at_once_with_its_line(project_dir):
    (project_dir / "minime.yaml").write_text("models:\n  teacher: openai:m@http://127.0.0.1:9/v1\n")
    result = run("data", "respond", project_dir)
    assert result.exit_code == 1
    output = result.output.replace("\n", "")
    assert "minime.yaml:2: models.teacher: openai:m@http://127.0.0.1:9/v1: cannot connect" in output
