import pytest
from typer.testing import CliRunner

from minime.cli import app
from minime.errors import InputError
from minime.project import Project, init_project


def test_init_writes_a_project_that_opens(tmp_path):
    written = init_project(tmp_path / "p", "Ada Example")
    assert sorted(p.name for p in written) == ["minime.yaml", "profile.md", "prompts.txt"]
    project = Project.open(tmp_path / "p")
    assert project.name == "Ada Example"
    assert project.prompt_files == [tmp_path / "p" / "prompts.txt"]


def test_init_keeps_existing_files(tmp_path):
    (tmp_path / "profile.md").write_text("# Mine\n")
    written = init_project(tmp_path, "Other")
    assert tmp_path / "profile.md" not in written
    assert (tmp_path / "profile.md").read_text() == "# Mine\n"


def test_name_falls_back_to_first_heading(tmp_path):
    (tmp_path / "profile.md").write_text("Intro line\n\n# Grace Hopper\n\n## Work\nNavy.\n")
    assert Project.open(tmp_path).name == "Grace Hopper"


def test_missing_profile_names_file_and_field(tmp_path):
    (tmp_path / "minime.yaml").write_text("profile: about.md\n")
    with pytest.raises(InputError, match=r'about\.md: profile not found \(field "profile"'):
        Project.open(tmp_path)


def test_empty_profile_is_an_error(tmp_path):
    (tmp_path / "profile.md").write_text("  \n")
    with pytest.raises(InputError, match="profile is empty"):
        Project.open(tmp_path)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no such project folder"):
        Project.open(tmp_path / "nope")


def test_out_dir_is_per_stage(tmp_path):
    init_project(tmp_path, "A")
    assert Project.open(tmp_path).out_dir("data") == tmp_path / "out" / "data"
    assert (tmp_path / "out" / "data").is_dir()


def test_example_persona_is_complete(example_project):
    assert example_project.name == "Mara Lindqvist"
    facts = [line for line in example_project.profile.splitlines() if line.startswith("- ")]
    assert len(facts) >= 30
    prompts = example_project.prompt_files[0].read_text().splitlines()
    assert len([p for p in prompts if p.strip()]) >= 15


def test_cli_init(tmp_path):
    result = CliRunner().invoke(app, ["init", str(tmp_path / "new"), "--name", "Ada"])
    assert result.exit_code == 0, result.output
    assert "profile.md" in result.output
    assert "name: Ada" in (tmp_path / "new" / "minime.yaml").read_text()


def test_distill_without_a_dataset_says_what_to_run(tmp_path):
    (tmp_path / "profile.md").write_text("# Ada\n\n- Ada builds bridges.\n")
    result = CliRunner().invoke(app, ["distill", str(tmp_path)])
    assert result.exit_code == 1
    output = result.output.replace("\n", "")
    assert "train.jsonl: missing; run `minime data` first" in output


def test_cli_turns_user_errors_into_one_line(tmp_path):
    result = CliRunner().invoke(app, ["chat", str(tmp_path / "missing"), "hi"])
    assert result.exit_code == 1
    assert "error:" in result.output and "no such project folder" in result.output
    assert "Traceback" not in result.output
