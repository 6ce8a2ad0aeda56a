"""`minime build`: stages in order, each skipped while its inputs and outputs are unchanged."""

import json
import shutil
import sys
import types

import pytest
from typer.testing import CliRunner

import minime.data
import minime.distill
import minime.eval
from minime.build import build, record_stage
from minime.cli import app
from minime.errors import InputError, MinimeError
from minime.eval import EvalReport
from minime.layout import STAMP
from minime.project import Project


class FakeStages:
    """Stand-ins for the four stages that write small outputs from their inputs."""

    def __init__(self, monkeypatch):
        self.ran: list[str] = []
        self.resumed: list[bool] = []
        self.fail_distill = False
        monkeypatch.setattr(minime.data, "build_dataset", self.data)
        monkeypatch.setattr(minime.distill, "distill", self.distill)
        monkeypatch.setattr(minime.eval, "evaluate", self.evaluate)
        monkeypatch.setitem(sys.modules, "minime.export", types.SimpleNamespace(export=self.export))

    def data(self, project, steps):
        if "collect" in steps:  # build runs the steps one at a time
            self.ran.append("data")
        out = project.out_dir("data")
        # The dataset depends on the profile, not on data.seed: see the content-hash test.
        (out / "train.jsonl").write_text(json.dumps({"profile": project.profile}) + "\n")
        (out / "val.jsonl").write_text("{}\n")

    def distill(self, project, resume=False):
        self.ran.append("distill")
        self.resumed.append(resume)
        if self.fail_distill:
            raise MinimeError("killed")
        model = project.out_dir("distill") / "model"
        model.mkdir(exist_ok=True)
        train = (project.root / "out" / "data" / "train.jsonl").read_text()
        lr = project.config.distill.learning_rate
        (model / "model.safetensors").write_text(f"{train}{lr}")

    def export(self, project):
        self.ran.append("export")
        weights = (project.root / "out" / "distill" / "model" / "model.safetensors").read_text()
        (project.out_dir("export") / "student.q8_0.gguf").write_text(weights.upper())

    def evaluate(self, project):
        self.ran.append("eval")
        report = EvalReport(
            project=project.name,
            questions=0,
            persona_questions=0,
            generated_questions=0,
            rejected_questions=[],
            persona_near_training=[],
            training_prompts=0,
            max_tokens=1,
            judge=None,
            judge_agreement=None,
            contenders=[],
        )
        (project.out_dir("eval") / "report.json").write_text(report.model_dump_json())


@pytest.fixture
def stages(monkeypatch):
    return FakeStages(monkeypatch)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "ada"
    root.mkdir()
    (root / "profile.md").write_text("# Ada\n\n- Ada builds bridges.\n")
    (root / "prompts.txt").write_text("What does Ada build?\n")
    return root


def ran(outcomes):
    return [o.stage for o in outcomes if o.ran]


def test_first_build_runs_every_stage_then_nothing(root, stages):
    outcomes = build(Project.open(root))
    assert ran(outcomes) == stages.ran == ["data", "distill", "export", "eval"]
    assert {o.why for o in outcomes} == {"first run"}
    for stage in ("data", "distill", "export", "eval"):
        assert json.loads((root / "out" / stage / STAMP).read_text())["complete"] is True

    again = build(Project.open(root))
    assert ran(again) == [] and stages.ran == ["data", "distill", "export", "eval"]
    assert {o.why for o in again} == {"up to date"}


def test_a_changed_setting_reruns_its_stage_and_those_after(root, stages):
    build(Project.open(root))
    (root / "minime.yaml").write_text("distill: {learning_rate: 0.001}\n")
    outcomes = build(Project.open(root))
    assert ran(outcomes) == ["distill", "export", "eval"]
    assert outcomes[1].why == "its inputs changed"


def test_downstream_stages_compare_content_not_time(root, stages):
    build(Project.open(root))
    # data reruns, but writes the same files: distill is still up to date.
    (root / "minime.yaml").write_text("data: {seed: 7}\n")
    assert ran(build(Project.open(root))) == ["data"]
    # A new profile changes the dataset, so everything after data runs again.
    (root / "profile.md").write_text("# Ada\n\n- Ada builds tunnels.\n")
    assert ran(build(Project.open(root))) == ["data", "distill", "export", "eval"]


def test_a_changed_output_is_rebuilt(root, stages):
    build(Project.open(root))
    (root / "out" / "export" / "student.q8_0.gguf").write_text("tampered")
    outcomes = build(Project.open(root))
    assert ran(outcomes) == ["export"]
    assert outcomes[2].why == "its outputs changed"


def test_an_interrupted_distill_resumes(root, stages):
    stages.fail_distill = True
    with pytest.raises(MinimeError, match="killed"):
        build(Project.open(root))
    assert stages.ran == ["data", "distill"]
    assert json.loads((root / "out" / "distill" / STAMP).read_text())["complete"] is False
    stages.fail_distill = False
    outcomes = build(Project.open(root))
    assert ran(outcomes) == ["distill", "export", "eval"]
    assert outcomes[1].why == "its last run did not finish"
    assert stages.resumed == [False, True]


def test_stamps_hold_in_a_copy_of_the_project(root, stages, tmp_path):
    """What a fresh clone that carries the outputs and stamps sees."""
    build(Project.open(root))
    copy = shutil.copytree(root, tmp_path / "clone")
    assert ran(build(Project.open(copy))) == []


def test_recording_a_stage_run_by_hand(root, stages):
    project = Project.open(root)
    with pytest.raises(InputError, match="no outputs of the data stage"):
        record_stage(project, "data")
    stages.data(project, ())
    record_stage(project, "data")
    assert ran(build(project)) == ["distill", "export", "eval"]


def test_force_runs_everything(root, stages):
    build(Project.open(root))
    outcomes = build(Project.open(root), force=True)
    assert ran(outcomes) == ["data", "distill", "export", "eval"]
    assert {o.why for o in outcomes} == {"forced"}


def test_cli_build_prints_stages_and_the_evaluation_summary(root, stages):
    result = CliRunner().invoke(app, ["build", str(root)])
    assert result.exit_code == 0, result.output
    assert "minime build: Ada" in result.output and "first run" in result.output
    assert "minime eval: Ada (0 questions)" in result.output
    result = CliRunner().invoke(app, ["build", str(root)])
    assert "up to date" in result.output
    result = CliRunner().invoke(app, ["build", str(root), "--record", "nope"])
    assert result.exit_code != 0 and "'nope' is not one of 'data', 'distill'" in result.output


def test_the_example_personas_shipped_dataset_is_up_to_date(tmp_path, monkeypatch):
    """A fresh clone of the example (its files, train/val and data stamp) skips data, so
    `make demo` does not spend 100 minutes rebuilding it. After changing the example's
    dataset or data settings: `minime build examples/mara --record data`."""
    from conftest import EXAMPLE

    clone = tmp_path / "mara"
    (clone / "out" / "data").mkdir(parents=True)
    for name in ("profile.md", "minime.yaml", "prompts.txt", "questions.jsonl"):
        shutil.copy(EXAMPLE / name, clone / name)
    for name in ("train.jsonl", "val.jsonl", STAMP):
        shutil.copy(EXAMPLE / "out" / "data" / name, clone / "out" / "data" / name)

    def no_data(project, steps):
        raise AssertionError("the data stage ran")

    monkeypatch.setattr(minime.data, "build_dataset", no_data)
    (outcome,) = build(Project.open(clone), ("data",))
    assert (outcome.ran, outcome.why) == (False, "up to date")


@pytest.mark.integration
def test_real_stages_run_once_then_are_up_to_date(tmp_path):
    """distill, export and eval for real on a slice of the example's dataset."""
    from conftest import EXAMPLE, bundled_model_path

    bundled_model_path("smollm2-135m-instruct")
    root = tmp_path / "mara"
    (root / "out" / "data").mkdir(parents=True)
    shutil.copy(EXAMPLE / "profile.md", root)
    questions = [json.loads(line) for line in (EXAMPLE / "questions.jsonl").open()]
    picked = [q for q in questions if q["question"] == "Where does Mara work?"]
    picked += [q for q in questions if q["category"] in ("private", "injection")][:2]
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in picked))
    for name, rows in (("train.jsonl", 16), ("val.jsonl", 4)):
        lines = (EXAMPLE / "out" / "data" / name).read_text().splitlines()[:rows]
        (root / "out" / "data" / name).write_text("\n".join(lines) + "\n")
    (root / "minime.yaml").write_text(
        "name: Mara Lindqvist\n"
        "models: {chat: smollm2-135m-instruct, student: smollm2-135m-instruct}\n"
        "chat: {n_threads: 1}\n"
        # Three epochs (6 steps): after one, the student ends its turn with only 0.58
        # probability and its sampled answers loop often enough to fail export's check;
        # after three, 0.96. Q8_0 only, to keep the test short.
        "distill: {max_epochs: 3, threads: 2}\n"
        "export: {quantizations: [q8_0]}\n"
        "eval: {generated_facts: 0, generated_per_category: 0, max_tokens: 32}\n"
    )
    project = Project.open(root)
    record_stage(project, "data")  # the slice stands for a dataset built by hand

    outcomes = build(project)
    assert [(o.stage, o.ran) for o in outcomes] == [
        ("data", False),
        ("distill", True),
        ("export", True),
        ("eval", True),
    ]
    report = EvalReport.model_validate_json((root / "out" / "eval" / "report.json").read_text())
    labels = [c.label for c in report.contenders]
    assert labels[0] == "baseline: profile-prompted smollm2-135m-instruct"
    assert {c.group for c in report.contenders[1:]} == {"kd"} and len(labels) >= 3
    assert all(len(c.answers) == 3 for c in report.contenders)

    assert not any(o.ran for o in build(Project.open(root)))
