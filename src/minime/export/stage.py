"""`minime export DIR`: the trained student as GGUF files that llama.cpp and Ollama run.

Reads `out/distill/model/` (or another trained folder, `source`) and writes `out/export/`
(`out/export-<m>/` for `out/distill-<m>/model`):
- `<name>.f16.gguf`, then one file per quantization (`<name>.q8_0.gguf`,
  `<name>.q4_k_m.gguf`), each carrying the student's chat template and end-of-turn ids;
- `Modelfile` for Ollama, `README.md` (model card);
- `export.json` (files with sizes and sha256, the template, end-of-turn ids, whether
  verified) and `verify.json` (`minime.export.verify`).
A rerun with an unchanged source and settings keeps the files and only verifies again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel
from rich.progress import Progress

from minime.backends.base import SamplingParams
from minime.errors import InputError, MinimeError
from minime.export.card import model_card
from minime.export.convert import ExportError, quantize, write_f16_gguf
from minime.export.ollama import TurnFormat, modelfile
from minime.export.verify import VerifyReport, verify_files
from minime.fileio import file_sha256, write_text_atomic
from minime.layout import (
    EXPORT_JSON,
    REPORT_JSON,
    VERIFY_JSON,
    export_dir_for,
    exported_ggufs,
    read_json,
    slug,
    train_file,
    trained_model,
    val_file,
)
from minime.project import Project
from minime.registry import resolve
from minime.rows import read_rows


class VerificationFailed(MinimeError):
    """An exported file did not pass verification; `verify.json` has the figures."""


class ExportResult(BaseModel):
    """What `minime export` wrote."""

    folder: Path
    files: dict[str, Path]
    default: str
    reused: bool
    verify: VerifyReport | None


def export(project: Project, source: Path | None = None, verify: bool = True) -> ExportResult:
    """Convert the trained student into GGUF files, a Modelfile and a model card; verify them.

    :param source: the trained model folder; default `out/distill/model`.
    :param verify: run the checks of `minime.export.verify` after writing (recommended).
    :raises InputError: if the source is missing or is not a minime-trained folder.
    :raises ExportError: if the student cannot be written as a GGUF (see the message).
    :raises VerificationFailed: if a check failed (after writing `verify.json`).
    """
    from transformers import AutoTokenizer

    from minime.student import end_of_turn_text

    settings = project.config.export
    source = _source(project, source)
    meta = _student_meta(source)
    folder = export_folder(project, source)
    name = slug(project.name)
    base = _base_gguf(meta, source)
    paths = {"f16": folder / f"{name}.f16.gguf"}
    paths |= {quant: folder / f"{name}.{quant}.gguf" for quant in settings.quantizations}
    fingerprint = _fingerprint(source, [name, settings.default, *settings.quantizations])
    previous = read_json(folder / EXPORT_JSON)
    reused = _up_to_date(previous, folder, fingerprint)
    if reused:
        base_info = previous["base"]
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
        fmt = TurnFormat.from_tokenizer(tokenizer)  # before the slow work: it may refuse
        end_ids = meta["end_of_turn_ids"]
        marker = tokenizer(end_of_turn_text(tokenizer), add_special_tokens=False)["input_ids"]
        _remove_previous(previous, folder, set(paths.values()))
        with Progress(transient=True) as progress:
            task = progress.add_task(
                f"export: {paths['f16'].name}", total=1 + len(settings.quantizations)
            )
            base_info = write_f16_gguf(
                source,
                base,
                paths["f16"],
                chat_template=meta["chat_template"],
                end_of_turn_id=marker[0] if marker and marker[0] in end_ids else None,
                name=name,
                description=f"Answers questions about {project.name}; distilled by minime "
                f"({meta.get('method')}) from {base.name}, with no profile in its prompt.",
            )
            for quant in settings.quantizations:
                progress.update(task, advance=1, description=f"export: {paths[quant].name}")
                quantize(paths["f16"], paths[quant], quant, settings.threads)
        bos = tokenizer.bos_token if base_info["add_bos_token"] else None
        stops = [tokenizer.convert_ids_to_tokens(i) for i in end_ids]
        default = paths[settings.default].name
        modelfile_text = modelfile(default, fmt, stops, bos, project.config.chat)
        write_text_atomic(folder / "Modelfile", modelfile_text)
        base_info["path"] = str(base)
        manifest = {
            "source": str(source),
            "student": meta.get("student"),
            "method": meta.get("method"),
            "default": settings.default,
            "files": [_file_entry(folder, quant, path) for quant, path in paths.items()],
            "end_of_turn_ids": end_ids,
            "chat_template": meta["chat_template"],
            "verified": False,
            "base": base_info,
            "fingerprint": fingerprint,
        }
        _write_json(folder / EXPORT_JSON, manifest)
    report = None
    if verify:
        try:
            report = verify_export(project, source)
        finally:
            _write_card(project, folder, source)
    else:
        _write_card(project, folder, source)
    return ExportResult(
        folder=folder,
        files=exported_ggufs(folder),
        default=settings.default,
        reused=reused,
        verify=report,
    )


def verify_export(project: Project, source: Path | None = None) -> VerifyReport:
    """Check the exported files of `source` (default `out/distill/model`); write `verify.json`
    and mark `export.json` verified or not.

    :raises InputError: if nothing was exported from `source` yet.
    :raises VerificationFailed: if a check failed, naming each failure.
    """
    settings, chat = project.config.export, project.config.chat
    source = _source(project, source)
    folder = export_folder(project, source)
    files = exported_ggufs(folder)
    if "f16" not in files:
        raise InputError(f"{folder / EXPORT_JSON}: lists no f16 file; run `minime export` again")
    train_rows = read_rows(train_file(project.root))
    val_path = val_file(project.root)
    val_rows = read_rows(val_path) if val_path.is_file() else []
    prompts = val_rows or train_rows
    if settings.verify_prompts:
        prompts = prompts[: settings.verify_prompts]
    report = verify_files(
        files,
        source,
        train_rows,
        prompts,
        params=SamplingParams(
            temperature=chat.temperature,
            top_p=chat.top_p,
            seed=chat.seed,
            max_tokens=settings.verify_max_tokens,
        ),
        threads=settings.threads,
    )
    _write_json(folder / VERIFY_JSON, json.loads(report.model_dump_json()))
    manifest = read_json(folder / EXPORT_JSON)
    manifest["verified"] = report.passed
    _write_json(folder / EXPORT_JSON, manifest)
    if not report.passed:
        raise VerificationFailed(
            f"{folder / VERIFY_JSON}: verification failed: " + "; ".join(report.failures)
        )
    return report


def export_folder(project: Project, source: Path) -> Path:
    """The export folder of `source` (`layout.export_dir_for`), created."""
    folder = export_dir_for(project.root, source)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _source(project: Project, source: Path | None) -> Path:
    source = Path(source) if source else trained_model(project.root)
    if not (source / "minime.json").is_file():
        hint = "run `minime distill` first" if not source.exists() else "not trained by minime"
        raise InputError(f"{source / 'minime.json'}: missing; {hint}")
    return source


def _student_meta(source: Path) -> dict:
    meta = read_json(source / "minime.json")
    for field in ("chat_template", "end_of_turn_ids"):
        if not meta.get(field):
            raise InputError(f'{source / "minime.json"}: field "{field}" is missing or empty')
    return meta


def _base_gguf(meta: dict, source: Path) -> Path:
    """The GGUF the student was converted from; looked up again by its spec when the
    recorded path is gone (a bundled model on another machine)."""
    recorded = (meta.get("base") or {}).get("source")
    if recorded and recorded.endswith(".gguf") and Path(recorded).is_file():
        return Path(recorded)
    try:
        resolved = resolve(meta.get("student") or "")
    except MinimeError:
        resolved = None
    if resolved is not None and resolved.kind == "gguf" and resolved.path.is_file():
        return resolved.path
    if recorded and not recorded.endswith(".gguf"):
        raise ExportError(
            f"{source}: the student was trained from a Hugging Face folder ({recorded}); "
            "minime exports students trained from a GGUF (the bundled models or a .gguf "
            "spec), because it writes the trained weights into that GGUF. Convert this one "
            "with llama.cpp's convert_hf_to_gguf.py"
        )
    raise ExportError(
        f"{source}: the base GGUF {recorded or meta.get('student')!r} is not on this machine; "
        "install the bundled models (`scripts/setup.sh --models`) or restore the file"
    )


def _fingerprint(source: Path, settings: list[str]) -> str:
    """The identity of what an export is made of: the model files and the settings."""
    digest = hashlib.sha256(json.dumps(settings).encode())
    for path in sorted(source.iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _up_to_date(previous: dict | None, folder: Path, fingerprint: str) -> bool:
    if not previous or previous.get("fingerprint") != fingerprint:
        return False
    return (
        all(
            (folder / entry["path"]).is_file()
            and (folder / entry["path"]).stat().st_size == entry["bytes"]
            for entry in previous.get("files", [])
        )
        and (folder / "Modelfile").is_file()
    )


def _remove_previous(previous: dict | None, folder: Path, keep: set[Path]) -> None:
    """Delete what an earlier export wrote and this one will not replace, and its verdict."""
    (folder / VERIFY_JSON).unlink(missing_ok=True)
    for entry in (previous or {}).get("files", []):
        path = folder / entry["path"]
        if path not in keep and path.parent == folder:
            path.unlink(missing_ok=True)


def _file_entry(folder: Path, quant: str, path: Path) -> dict:
    return {
        "quant": quant,
        "path": path.relative_to(folder).as_posix(),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_card(project: Project, folder: Path, source: Path) -> None:
    write_text_atomic(
        folder / "README.md",
        model_card(
            project,
            manifest=read_json(folder / EXPORT_JSON) or {},
            verify=read_json(folder / VERIFY_JSON),
            distill=read_json(source.parent / REPORT_JSON),
        ),
    )
