from pathlib import Path

import pytest

from minime.config import MinimeConfig, load_config
from minime.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "minime.yaml"
    path.write_text(text)
    return path


def test_missing_file_gives_defaults(tmp_path):
    config = load_config(tmp_path / "minime.yaml")
    assert config == MinimeConfig()
    assert config.models.student == "smollm2-135m-instruct"
    assert config.models.chat == "qwen2.5-coder-1.5b-instruct"


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing\n")) == MinimeConfig()


def test_values_are_read(tmp_path):
    config = load_config(write(tmp_path, "name: Ada\nchat:\n  temperature: 0.7\n"))
    assert config.name == "Ada"
    assert config.chat.temperature == 0.7
    assert config.chat.max_tokens == MinimeConfig().chat.max_tokens


def test_unknown_key_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "name: Ada\nchat:\n  temperature: 0.2\n  max_tokenz: 10\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == (
        f"{path}:4: chat.max_tokenz: unknown setting (check its spelling and indentation)"
    )


def test_wrong_type_names_file_line_and_field(tmp_path):
    path = write(tmp_path, "models:\n  student: x\nchat:\n  n_ctx: lots\n")
    with pytest.raises(
        ConfigError, match=rf"^{path}:4: chat\.n_ctx: Input should be a valid integer"
    ):
        load_config(path)


def test_out_of_range_value(tmp_path):
    path = write(tmp_path, "chat:\n  temperature: 5\n")
    with pytest.raises(
        ConfigError, match=r":2: chat\.temperature: Input should be less than or equal to 2"
    ):
        load_config(path)


def test_error_inside_a_list_names_the_index(tmp_path):
    path = write(tmp_path, "models:\n  generators:\n    - a\n    - {x: 1}\n")
    with pytest.raises(
        ConfigError, match=r":4: models\.generators\.1: Input should be a valid string"
    ):
        load_config(path)


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, "name: Ada\nchat: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3:1: YAML syntax error"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        load_config(path)
