"""`minime eval --candidates`: one project per student, trained and exported, then compared."""

import json
import sys
import types

import yaml

import minime.candidates as candidates_module
import minime.distill
from minime.candidates import compare_candidates
from minime.layout import default_quant
from minime.project import Project


def test_each_candidate_is_trained_exported_and_compared(tmp_path, monkeypatch):
    root = tmp_path / "ada"
    (root / "out" / "data").mkdir(parents=True)
    (root / "profile.md").write_text("# Ada\n\n- Ada builds bridges.\n")
    (root / "questions.jsonl").write_text('{"question": "What?", "category": "fact"}\n')
    (root / "out" / "data" / "train.jsonl").write_text("{}\n")
    trained = []

    def distill(project, resume=False):
        trained.append(project.config.models.student)
        model = project.out_dir("distill") / "model"
        model.mkdir()
        (model / "model.safetensors").write_text(project.config.models.student)

    def export(project):
        folder = project.out_dir("export")
        files = []
        for quant in ("f16", "q8_0"):
            (folder / f"s.{quant}.gguf").write_text(quant)
            files.append({"quant": quant, "path": f"s.{quant}.gguf"})
        (folder / "export.json").write_text(json.dumps({"default": "q8_0", "files": files}))

    def exported_ggufs(folder):
        manifest = json.loads((folder / "export.json").read_text())
        return {f["quant"]: folder / f["path"] for f in manifest["files"]}

    compared = {}

    def evaluate(project, contenders, judge=None, out=None):
        compared.update(contenders=contenders, out=out)
        return "report"

    monkeypatch.setattr(minime.distill, "distill", distill)
    fake_export = types.SimpleNamespace(
        export=export, exported_ggufs=exported_ggufs, default_quant=default_quant
    )
    monkeypatch.setitem(sys.modules, "minime.export", fake_export)
    monkeypatch.setattr(candidates_module, "evaluate", evaluate)

    project = Project.open(root)
    assert compare_candidates(project, ["smollm2-135m-instruct", "gemma3-270m"]) == "report"
    assert trained == ["smollm2-135m-instruct", "gemma3-270m"]
    folder = root / "out" / "eval" / "candidates"
    assert compared["out"] == folder
    assert [(c.label, c.mode, c.quant) for c in compared["contenders"]] == [
        ("baseline: profile-prompted qwen2.5-coder-1.5b-instruct", "profile", None),
        ("smollm2-135m-instruct", "plain", "q8_0"),
        ("gemma3-270m", "plain", "q8_0"),
    ]
    candidate = folder / "gemma3-270m"
    assert compared["contenders"][2].spec == str(candidate / "out" / "export" / "s.q8_0.gguf")
    settings = yaml.safe_load((candidate / "minime.yaml").read_text())
    assert settings["models"]["student"] == "gemma3-270m"
    assert settings["profile"] == str((root / "profile.md").resolve())
    assert (candidate / "out" / "data").resolve() == (root / "out" / "data").resolve()
    assert Project.open(candidate).profile == project.profile

    # A second comparison trains nothing again.
    compare_candidates(project, ["smollm2-135m-instruct", "gemma3-270m"])
    assert trained == ["smollm2-135m-instruct", "gemma3-270m"]
