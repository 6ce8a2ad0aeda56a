"""The model card (`out/export/README.md`): what the files are, where they come from, how
well they do."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from minime.jsonl import read_jsonl
from minime.layout import data_outputs, eval_report
from minime.project import Project

#: general.license values of the bundled bases, and what they mean.
LICENCES = {
    "apache-2.0": "Apache-2.0 (https://www.apache.org/licenses/LICENSE-2.0)",
    "gemma": "Gemma Terms of Use (https://ai.google.dev/gemma/terms), Prohibited Use Policy "
    "included",
    "mit": "MIT",
}


def model_card(
    project: Project, *, manifest: dict, verify: dict | None, distill: dict | None
) -> str:
    """The card, from `export.json`, `verify.json` and the distill report when present."""
    base = manifest.get("base", {})
    default = next(
        (f["path"] for f in manifest.get("files", []) if f["quant"] == manifest.get("default")),
        "",
    )
    licence = base.get("license") or "see the base model"
    lines = [
        f"# {project.name}: a minime assistant",
        "",
        f"A small chat model that answers visitors' questions about {project.name}. It was "
        f"distilled by minime from a teacher that had {project.name}'s profile in its prompt; "
        "this student has no profile and no system prompt: it learned the facts.",
        "",
        "## Files",
        "",
        "| file | quantization | size |",
        "| --- | --- | ---: |",
    ]
    lines += [
        f"| `{f['path']}` | {f['quant'].upper()} | {_size(f['bytes'])} |"
        for f in manifest.get("files", [])
    ]
    lines += [
        "",
        "Each file carries the chat template the student was trained with and its end-of-turn "
        f"token ids ({', '.join(map(str, manifest.get('end_of_turn_ids', [])))}), so llama.cpp "
        "needs no outside template.",
        "",
        "```bash",
        f"llama-cli -m {default} -cnv    # llama.cpp, with the embedded template",
        f"ollama create {_model_name(default)} -f Modelfile    # Ollama",
        "```",
        "",
        "## Base model and licence",
        "",
        f"- base: {base.get('name', '?')} (`{Path(base.get('path', '?')).name}`, "
        f"architecture {base.get('architecture', '?')}), minime spec `{manifest.get('student')}`",
        f"- licence: {LICENCES.get(str(licence).lower(), licence)}; this model is a derivative "
        "of the base and carries its licence.",
        "",
        "## Training data",
        "",
    ]
    lines += _data_lines(project)
    lines += ["", "## Training", ""]
    lines += _training_lines(manifest, distill)
    lines += ["", "## Verification", ""]
    lines += _verify_lines(verify)
    evaluation = _evaluation_lines(project)
    if evaluation:
        lines += ["", "## Evaluation", "", *evaluation]
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _model_name(file_name: str) -> str:
    return file_name.split(".")[0] or "minime"


def _data_lines(project: Project) -> list[str]:
    lines = []
    for split, path in zip(("train", "val"), data_outputs(project.root), strict=True):
        if not path.is_file():
            continue
        categories = Counter(row.get("category") or "other" for _, row in read_jsonl(path))
        shown = ", ".join(f"{c} {n}" for c, n in categories.most_common())
        lines.append(f"- {split}: {sum(categories.values())} rows ({shown})")
    return lines or ["- no dataset found under out/data"]


def _training_lines(manifest: dict, distill: dict | None) -> list[str]:
    lines = [f"- method: {manifest.get('method')}"]
    if not distill:
        return lines
    lines = [
        f"- method: {distill.get('method')} ({distill.get('mode')}), {distill.get('tuning')} "
        f"tuning, {distill.get('trainable_parameters', 0):,} trainable parameters",
        f"- {distill.get('steps')} steps ({distill.get('epochs')} epochs) on "
        f"{distill.get('train_rows')} rows, {distill.get('seconds')} s",
        f"- final train loss {_figure(distill.get('final_train_loss'))}, best validation loss "
        f"{_figure(distill.get('best_val_loss'))}",
        f"- fact recall: train {_share(distill.get('fact_recall_train'))}, validation "
        f"{_share(distill.get('fact_recall_val'))}; persona's held-out fact questions "
        f"{_share(distill.get('persona_fact_accuracy'))}",
    ]
    return lines


def _verify_lines(verify: dict | None) -> list[str]:
    if not verify:
        return ["Not verified yet: run `minime export DIR --verify`."]
    state = "passed" if verify.get("passed") else "FAILED: " + "; ".join(verify["failures"])
    tokens = verify.get("tokenizer", {})
    lines = [
        f"`minime export --verify`: {state}.",
        "",
        f"- tokenizer: {tokens.get('rows', 0) - tokens.get('prompt_mismatches', 0)} of "
        f"{tokens.get('rows', 0)} training prompts give the trained ids through the GGUF's "
        "own template",
        f"- the trained model gives its end-of-turn token "
        f"{verify.get('student_end_of_turn_probability', 0):.2f} probability, on average, "
        "right after each validation answer",
        "",
        "| file | top-1 agreement | mean KL | answers that end their turn | mean tokens |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for quant, figures in verify.get("logits", {}).items():
        answers = verify.get("answers", {}).get(quant)
        stopped = f"{answers['stopped']} / {answers['prompts']}" if answers else "-"
        mean = answers.get("mean_tokens", "-") if answers else "-"
        lines.append(
            f"| {quant.upper()} | {figures['top1_agreement']:.3f} | {figures['mean_kl']:.4f} "
            f"| {stopped} | {mean} |"
        )
    lines += [
        "",
        "Agreement and KL compare each file's next-token distribution with the trained "
        "model's on the validation answers.",
    ]
    return lines


def _evaluation_lines(project: Project) -> list[str]:
    """Top-level figures of `out/eval/report.json`, when `minime eval` has run."""
    path = eval_report(project.root)
    if not path.is_file():
        return []
    report = json.loads(path.read_text(encoding="utf-8"))
    lines = ["| figure | value |", "| --- | --- |"]
    for key, value in report.items():
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            lines.append(f"| {key} | {value} |")
        elif isinstance(value, dict):
            lines += [
                f"| {key}.{k} | {v} |" for k, v in value.items() if isinstance(v, int | float)
            ]
    return [*lines, "", "Details: `out/eval/report.json`."]


def _figure(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _share(value) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"
