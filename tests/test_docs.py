"""The documentation: the generated settings reference is current, and links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "settings_reference.py"
#: A markdown link to a relative target: [text](target) or [text](target#anchor).
LINK = re.compile(r"\]\((?!https?://|mailto:)([^)#\s]*)(?:#([^)\s]*))?\)")
#: Code blocks and spans, where brackets are not links (a regex such as `[a-z]([0-9])`).
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)
CODE_BLOCK = re.compile(r"```.*?```", re.DOTALL)


def _script():
    spec = importlib.util.spec_from_file_location("settings_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_reference_is_current():
    committed = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert committed == _script().render(), (
        "docs/settings.md is stale: run "
        "`.venv/bin/python scripts/settings_reference.py > docs/settings.md`"
    )


def test_settings_reference_names_every_setting():
    from minime.config import MinimeConfig

    text = _script().render()
    keys = []

    def walk(model, prefix):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if hasattr(value, "model_fields"):
                walk(value, f"{prefix}{name}.")
            else:
                keys.append(f"{prefix}{name}")
                assert field.description, f"{prefix}{name}: no Field(description=...)"

    walk(MinimeConfig(), "")
    assert keys
    for key in keys:
        assert f"| `{key}` |" in text, key


def test_check_flag_reports_staleness(tmp_path, monkeypatch, capsys):
    module = _script()
    monkeypatch.setattr(module, "DOC", tmp_path / "settings.md")
    assert module.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    (tmp_path / "settings.md").write_text(module.render(), encoding="utf-8")
    assert module.main(["--check"]) == 0


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of `page`."""
    text = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_resolve():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        where = page.relative_to(ROOT)
        for target, anchor in LINK.findall(CODE.sub("", page.read_text(encoding="utf-8"))):
            path = page.parent / target if target else page
            assert path.exists(), f"{where}: broken link {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{where}: no heading for {target}#{anchor}"
