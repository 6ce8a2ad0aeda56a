"""The `out/` layout of a project: every path one part of minime writes and another reads,
each stage's output files, and the manifests' names. Nothing else spells an `out/` path.

    out/data/train.jsonl, val.jsonl      the training set (`minime data`)
    out/data/profile.sha256              the profile the teacher last answered from
    out/distill[-METHOD]/model/          the trained student (`minime distill`)
    out/distill[-METHOD]/report.json     its report
    out/export[-METHOD]/export.json      the exported GGUFs' manifest (`minime export`)
    out/export[-METHOD]/verify.json      the export's checks
    out/eval/report.json                 the evaluation (`minime eval`)
    out/serve/requests.jsonl             the request log `minime serve` appends to
    out/deploy/                          the Docker build context (`minime deploy`)
    out/<stage>/build-stamp.json         what `minime build` last ran the stage on
    out/build-settings.json, report.html the settings of the last build; the project report

A `-METHOD` variant holds a distill method other than the configured one; `distill-M`
exports to `export-M`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from minime.errors import InputError

OUT = "out"
TRAIN = "train.jsonl"
VAL = "val.jsonl"
MODEL = "model"
#: Each stage's report beside its outputs (distill, eval).
REPORT_JSON = "report.json"
EXPORT_JSON = "export.json"
VERIFY_JSON = "verify.json"
STAMP = "build-stamp.json"

#: The export manifest and the request log relative to the project root, as `serve` and
#: `deploy` (which copies the project into its build context) need them.
EXPORT_MANIFEST = Path(OUT, "export", EXPORT_JSON)
REQUEST_LOG = Path(OUT, "serve", "requests.jsonl")


def out_dir(root: Path) -> Path:
    """The project's `out/` folder."""
    return Path(root) / OUT


def stage_dir(root: Path, stage: str) -> Path:
    """`out/<stage>/` (also `distill-METHOD`, `export-METHOD`, `serve`, `deploy`)."""
    return out_dir(root) / stage


def data_dir(root: Path) -> Path:
    """`out/data/`, the data stage's files."""
    return stage_dir(root, "data")


def train_file(root: Path) -> Path:
    """The training split, `out/data/train.jsonl`."""
    return data_dir(root) / TRAIN


def val_file(root: Path) -> Path:
    """The validation split, `out/data/val.jsonl` (may be missing)."""
    return data_dir(root) / VAL


def profile_sha_file(root: Path) -> Path:
    """sha256 of the profile the teacher last answered from (`minime data` or build)."""
    return data_dir(root) / "profile.sha256"


def distill_stage(method: str | None, configured: str) -> str:
    """The folder of a distill run: "distill" for the configured method, else
    "distill-METHOD"."""
    if method is None or method == configured:
        return "distill"
    return f"distill-{method}"


def trained_model(root: Path, stage: str = "distill") -> Path:
    """The trained student of a distill stage (`out/distill/model`)."""
    return stage_dir(root, stage) / MODEL


def distill_reports(root: Path) -> list[Path]:
    """Every `out/distill*/report.json`."""
    return sorted(out_dir(root).glob(f"distill*/{REPORT_JSON}"))


def trained_models(root: Path) -> list[Path]:
    """Every `out/distill*/model` folder, the configured method's and the variants'."""
    return sorted(out_dir(root).glob(f"distill*/{MODEL}"))


def export_dir(root: Path, suffix: str | None = None) -> Path:
    """`out/export/`, or `out/export-SUFFIX/` for a variant."""
    return stage_dir(root, f"export-{suffix}" if suffix else "export")


def export_dir_for(root: Path, source: Path) -> Path:
    """Where the export of a trained folder goes: `out/export` for `out/distill/model`,
    `out/export-<m>` for `out/distill-<m>/model`, `out/export-<folder>` for one elsewhere."""
    parent = Path(source).resolve().parent.name
    if parent == "distill":
        return export_dir(root)
    if parent.startswith("distill-"):
        return export_dir(root, parent.removeprefix("distill-"))
    return export_dir(root, slug(parent))


def export_manifests(root: Path) -> list[Path]:
    """Every `out/export*/export.json`."""
    return sorted(out_dir(root).glob(f"export*/{EXPORT_JSON}"))


def export_checks(root: Path) -> list[Path]:
    """Every `out/export*/verify.json`."""
    return sorted(out_dir(root).glob(f"export*/{VERIFY_JSON}"))


def exported_files(root: Path) -> list[Path]:
    """The exports' GGUFs and manifests, `out/export*/*.gguf` and `export.json`."""
    return sorted(out_dir(root).glob("export*/*.gguf")) + export_manifests(root)


def eval_dir(root: Path) -> Path:
    """`out/eval/`."""
    return stage_dir(root, "eval")


def eval_report(root: Path) -> Path:
    """The evaluation's report, `out/eval/report.json`."""
    return eval_dir(root) / REPORT_JSON


def deploy_dir(root: Path) -> Path:
    """The Docker build context, `out/deploy/`."""
    return stage_dir(root, "deploy")


def build_settings(root: Path) -> Path:
    """The settings of the last `minime build`, `out/build-settings.json`."""
    return out_dir(root) / "build-settings.json"


def stamp_file(root: Path, stage: str) -> Path:
    """`out/<stage>/build-stamp.json`."""
    return stage_dir(root, stage) / STAMP


def data_outputs(root: Path) -> list[Path]:
    """The files the data stage hands on: the two splits."""
    return [train_file(root), val_file(root)]


def distill_outputs(root: Path) -> list[Path]:
    """The files the distill stage hands on: the trained student's folder."""
    return sorted(trained_model(root).glob("*"))


def export_outputs(root: Path) -> list[Path]:
    """The files the export stage hands on: everything in `out/export/`."""
    return sorted(export_dir(root).glob("*"))


def eval_outputs(root: Path) -> list[Path]:
    """The eval stage's result: its report."""
    return [eval_report(root)]


def exported_ggufs(folder: Path) -> dict[str, Path]:
    """The exported GGUF files in `folder`, quantization -> path, from its `export.json`.

    :raises InputError: if the folder has no export.json (run `minime export`) or a listed
        file is missing.
    """
    manifest_path = Path(folder) / EXPORT_JSON
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: missing; run `minime export` first")
    manifest = read_json(manifest_path)
    files = {}
    for number, entry in enumerate(manifest.get("files", [])):
        path = Path(folder) / entry["path"]
        if not path.is_file():
            raise InputError(f'{manifest_path}: field "files.{number}.path": {path} is missing')
        files[entry["quant"]] = path
    return files


def default_quant(folder: Path) -> str | None:
    """The quantization `folder/export.json` names as the one to serve, if it names one."""
    default = (read_json(Path(folder) / EXPORT_JSON) or {}).get("default")
    return default if isinstance(default, str) else None


def read_json(path: Path) -> dict | None:
    """A JSON manifest or report; None when it is missing.

    :raises InputError: naming the line, if it is not valid JSON.
    """
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from exc


def slug(text: str) -> str:
    """A file or folder name from free text: ASCII, lower case, words joined by dashes."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-") or "minime"
