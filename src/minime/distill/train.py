"""`minime distill DIR`: train the student on `out/data/`, write the merged model and report.

Outputs under `out/distill/`: `model/` (the merged 16-bit student with its tokenizer and
chat template), `adapter/` (LoRA runs), `report.json`, `report.md`, `loss_curve.png`, and
`checkpoints/` while training (resumable with `--resume`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel

from minime import layout
from minime.bank import DECLINE_CATEGORIES
from minime.chat import system_prompt
from minime.config import DistillConfig
from minime.distill.data import (
    Example,
    VisitorTurns,
    chain_fact_rows,
    collate,
    encode_row,
    repeat_fact_rows,
    same_vocabulary,
)
from minime.errors import InputError
from minime.fileio import write_text_atomic
from minime.jsonl import load_jsonl
from minime.project import Project
from minime.recall import find, key_terms, missing, recalls
from minime.rows import read_rows
from minime.student import (
    chat_prompt_ids,
    end_of_turn_ids,
    end_of_turn_text,
    load_student,
    student_folder,
)

if TYPE_CHECKING:
    from transformers import TrainingArguments

#: Tokens generated per answer when measuring fact recall.
RECALL_MAX_TOKENS = 64
#: Training questions per fact whose recall is measured after training.
TRAIN_PROBES_PER_FACT = 3


class DistillReport(BaseModel):
    """What `minime distill` did and how well the student learned."""

    student: str
    method: str
    mode: str
    tuning: str
    trainable_parameters: int
    train_rows: int
    #: Repeats of rows of facts with fewer than `distill.fact_rows` rows, trained on too.
    repeated_fact_rows: int = 0
    #: Rows asking two fact questions at once (`distill.chained_rows`), trained on too.
    chained_rows: int = 0
    val_rows: int
    skipped_too_long: int
    steps: int
    epochs: float
    tokens: int
    seconds: float
    tokens_per_second: float
    final_train_loss: float | None
    best_val_loss: float | None
    best_fact_recall: float | None
    kept_step: int | None
    fact_recall_train: float | None
    fact_recall_val: float | None
    persona_fact_accuracy: float | None
    per_fact: dict[str, dict[str, float | None]]
    persona_failures: list[dict]
    history: list[dict]


def distill(
    project: Project, resume: bool = False, method: str | None = None
) -> DistillReport | None:
    """Train the student of `project` on its dataset; write `out/distill/` and return the report.

    :param resume: continue from the newest complete checkpoint instead of starting over.
    :param method: a method other than `distill.method`, trained into `out/distill-METHOD/`
        so that it can be compared with the configured one.
    :returns: the report; None on the other processes of a multi-GPU run, where only the
        main process saves and reports.
    :raises InputError: if the dataset is missing or malformed.
    """
    config = project.config.distill
    out = project.out_dir(layout.distill_stage(method, project.config.distill.method))
    if method:
        config = config.model_copy(update={"method": method})
    train_path, val_path = layout.train_file(project.root), layout.val_file(project.root)
    train_rows = read_rows(train_path)
    val_rows = read_rows(val_path) if val_path.exists() else []
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    student = _load(project, config, train_rows)
    dataset = _encode(project, student, config, train_rows, val_rows, train_path)
    checkpoints = out / "checkpoints"
    trained = _train(student, dataset, config, checkpoints, resume)
    if trained is None:
        return None
    model, figures = trained
    _save_outputs(model, student, out, config, project)
    report = _evaluate_and_report(project, model, student, config, dataset, figures)
    write_text_atomic(out / layout.REPORT_JSON, report.model_dump_json(indent=2) + "\n")
    _plot_curves(report.history, out / "loss_curve.png")
    write_text_atomic(out / "report.md", _markdown(report))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return report


@dataclass
class _Student:
    """The student as loaded, and how it is trained."""

    folder: Path
    model: Any
    tokenizer: Any
    end_ids: list[int]
    same_vocab: bool
    #: The distill method resolved: "sft", "context", "sparse" or "uld".
    mode: str


@dataclass
class _Dataset:
    """The rows, their encoded examples, and the validation questions recall is probed on."""

    train_rows: list[dict]
    val_rows: list[dict]
    train_set: list[Example]
    val_set: list[Example]
    skipped: int
    repeated: int
    chained: int
    probe: list[tuple[dict, set[str] | None]]

    @property
    def top_k(self) -> int:
        """The most teacher log-probs any position has."""
        return max(
            (len(ids) for e in self.train_set for ids, _ in e.teacher_top.values()), default=1
        )


@dataclass(frozen=True)
class TrainingFigures:
    """What one training run measured."""

    history: list[dict]
    tokens: int
    seconds: float
    trainable_parameters: int
    steps: int
    epochs: float
    kept_step: int | None


def _load(project: Project, config: DistillConfig, train_rows: list[dict]) -> _Student:
    folder = student_folder(project.config.models.student)
    model, tokenizer = load_student(folder)
    same_vocab = same_vocabulary(tokenizer, train_rows)
    return _Student(
        folder=folder,
        model=model,
        tokenizer=tokenizer,
        end_ids=end_of_turn_ids(tokenizer),
        same_vocab=same_vocab,
        mode=_mode(config.method, same_vocab),
    )


def _encode(
    project: Project,
    student: _Student,
    config: DistillConfig,
    train_rows: list[dict],
    val_rows: list[dict],
    train_path: Path,
) -> _Dataset:
    """Tokenize the rows; rows longer than `max_length` are skipped and counted.

    :raises InputError: if no training row fits.
    """
    context = system_prompt(project.name, project.profile) if student.mode == "context" else None
    suffix = end_of_turn_text(student.tokenizer)

    def encode(rows: list[dict]) -> list[Example | None]:
        return [
            encode_row(
                student.tokenizer,
                row,
                suffix,
                same_vocab=student.same_vocab,
                max_length=config.max_length,
                context_system=context,
            )
            for row in rows
        ]

    facts = (row["fact"] for row in train_rows if row.get("fact"))
    turns = VisitorTurns(project.name, config.seed, facts)
    vary = config.vary_questions
    rows = [turns.renamed(row) for row in train_rows] if vary else train_rows
    trained_rows = repeat_fact_rows(
        rows, config.fact_rows, config.seed, turns.repeated if vary else None
    )
    chained = chain_fact_rows(rows, config.chained_rows, turns)
    trained_rows += chained
    train, val = encode(trained_rows), encode(val_rows)
    dataset = _Dataset(
        train_rows=train_rows,
        val_rows=val_rows,
        train_set=[e for e in train if e is not None],
        val_set=[e for e in val if e is not None],
        skipped=sum(e is None for e in train + val),
        repeated=len(trained_rows) - len(train_rows) - len(chained),
        chained=len(chained),
        probe=_recall_probe(val_rows, project.name, declines=True),
    )
    if not dataset.train_set:
        raise InputError(f"{train_path}: no row fits in {config.max_length} tokens")
    return dataset


def training_arguments(
    config: DistillConfig, output_dir: Path, *, train_examples: int, validates: bool, by_score: bool
) -> TrainingArguments:
    """The `TrainingArguments` of a run: `DistillConfig` mapped onto transformers' settings.

    :param validates: there is a validation set (evaluate, track the best checkpoint).
    :param by_score: rank checkpoints by the probe's score, not by the lowest loss; the
        kept one is then chosen after training (`keeps_last`), otherwise Trainer loads the
        best at the end.
    """
    # transformers (and minime.distill.trainer, built on it) are imported when training
    # starts: they take seconds to load.
    from transformers import TrainingArguments

    steps_per_epoch = math.ceil(
        train_examples / (config.batch_size * config.gradient_accumulation * _world_size())
    )
    eval_steps = max(1, steps_per_epoch // config.eval_per_epoch)
    total_steps = steps_per_epoch * config.max_epochs
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=round(config.warmup_ratio * total_steps),
        weight_decay=config.weight_decay,
        num_train_epochs=config.max_epochs,
        eval_strategy="steps" if validates else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=validates and not by_score,
        # Validation loss on a noisy teacher's text is no proxy for knowing the facts: keep
        # the checkpoint that best answers the held-out phrasings and declines what it must.
        metric_for_best_model="ranking" if by_score else "loss",
        greater_is_better=by_score,
        logging_steps=max(1, min(10, eval_steps // 2)),
        seed=config.seed,
        data_seed=config.seed,
        bf16=_use_bf16(config),
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        remove_unused_columns=False,
        prediction_loss_only=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        save_only_model=False,
    )


def _train(
    student: _Student, dataset: _Dataset, config: DistillConfig, checkpoints: Path, resume: bool
) -> tuple[Any, TrainingFigures] | None:
    """Train (resuming from the newest complete checkpoint when asked); the trained model and
    the run's figures, or None on a process other than the main one."""
    from transformers import EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from minime.distill.trainer import (
        CompleteMarker,
        DistillTrainer,
        RecallPatience,
        RichProgress,
        TimeBudget,
        last_complete_checkpoint,
    )

    model, context_teacher = _prepare(
        student.model, student.folder, config, student.mode, student.end_ids
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    start_from = last_complete_checkpoint(checkpoints) if resume and checkpoints.exists() else None
    if start_from is None and checkpoints.exists():
        shutil.rmtree(checkpoints)
    probe, val_set = dataset.probe, dataset.val_set
    args = training_arguments(
        config,
        checkpoints,
        train_examples=len(dataset.train_set),
        validates=bool(val_set),
        by_score=bool(probe),
    )
    tokenizer, end_ids, pad_id, top_k = (
        student.tokenizer,
        student.end_ids,
        student.tokenizer.pad_token_id,
        dataset.top_k,
    )
    trainer = DistillTrainer(
        model=model,
        args=args,
        train_dataset=dataset.train_set,
        eval_dataset=val_set or None,
        data_collator=lambda batch: collate(batch, pad_id, top_k),
        distill=config,
        mode=student.mode,
        context_teacher=context_teacher,
        generate_answers=lambda m, rows: generate_answers(m, tokenizer, rows, end_ids),
        recall_probe=probe,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RichProgress(trainer))
    trainer.add_callback(CompleteMarker())
    if probe:
        trainer.add_callback(RecallPatience(config.patience))
    elif val_set:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=config.patience))
    if config.max_minutes:
        trainer.add_callback(TimeBudget(trainer, config.max_minutes))
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    seconds = time.monotonic() - started
    kept_step = trainer.state.global_step
    if probe and not _keeps_last(trainer.state, len(probe)):
        # Trainer's own end-of-training load, on the best checkpoint it kept (save_total_limit
        # keeps the best and the newest): the same path load_best_model_at_end takes,
        # LoRA and multi-GPU included.
        trainer._load_best_model()
        kept_step = _best_step(trainer.state)
    if not trainer.is_world_process_zero():
        return None
    figures = TrainingFigures(
        history=trainer.state.log_history,
        tokens=trainer.tokens_seen,
        seconds=seconds,
        trainable_parameters=trainable,
        steps=trainer.state.global_step,
        epochs=trainer.state.epoch or 0.0,
        kept_step=kept_step if probe else _best_step(trainer.state),
    )
    return trainer.model, figures


def _keeps_last(state, probe_size: int) -> bool:
    """Whether the last evaluation's checkpoint is kept over the best-ranked one."""
    from minime.distill.trainer import keeps_last

    scores = {h["step"]: h["eval_score"] for h in state.log_history if "eval_score" in h}
    best = _best_step(state)
    if best is None or best not in scores:
        return True
    return keeps_last(scores[best], scores[max(scores)], probe_size)


def _mode(method: str, same_vocab: bool) -> str:
    if method == "kd":
        return "sparse" if same_vocab else "uld"
    return method


def _use_bf16(config: DistillConfig) -> bool:
    if config.dtype == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return config.dtype == "bfloat16"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _prepare(model, folder: Path, config: DistillConfig, mode: str, end_ids: list[int]):
    """The model to train (LoRA-wrapped or not) and, for context KD with full tuning, a frozen
    copy of the base as the teacher.

    LoRA also trains the embedding rows of the end-of-turn tokens: a base model (Gemma 3
    270M) never saw its `<end_of_turn>` token, and with tied embeddings no adapter on the
    linear layers can raise that token's output score, so the student would never stop."""
    context_teacher = None
    if config.tuning == "lora":
        from peft import LoraConfig, get_peft_model

        targets: str | list[str] = "all-linear"
        if config.lora_embeddings:
            linear = {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and "lm_head" not in name
            }
            targets = sorted(linear | {"embed_tokens"})
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            trainable_token_indices=None if config.lora_embeddings else end_ids,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    elif mode == "context":
        context_teacher, _ = load_student(folder)
        context_teacher.requires_grad_(False).eval()
    return model, context_teacher


def _recall_probe(
    rows: list[dict], name: str, declines: bool = False
) -> list[tuple[dict, set[str] | None]]:
    """Questions written about a profile fact, with the key terms a right answer contains,
    and with `declines` the rows whose fixed answer declines (keys None: the student's
    answer must decline too)."""
    probe: list[tuple[dict, set[str] | None]] = []
    for row in rows:
        if len(row["messages"]) != 2:
            continue
        if row.get("fact") and row.get("category") in ("question", "multilingual"):
            keys = key_terms(row["fact"], row["messages"][-1]["content"], name)
            if keys:
                probe.append((row, keys))
        elif declines and row.get("teacher") == "policy" and row["category"] in DECLINE_CATEGORIES:
            probe.append((row, None))
    return probe


@torch.no_grad()
def generate_answers(model, tokenizer, rows: list[dict], end_ids: list[int]) -> list[str]:
    """Greedy answers of `model` to the user turns of `rows` (no profile), in batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    answers = []
    for start in range(0, len(rows), 16):
        prompts = [chat_prompt_ids(tokenizer, r["messages"][:-1]) for r in rows[start : start + 16]]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=RECALL_MAX_TOKENS,
            do_sample=False,
            eos_token_id=end_ids,
            pad_token_id=pad,
        )
        answers += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    if was_training:
        model.train()
    return [a.strip() for a in answers]


def _save_outputs(
    model, student: _Student, out: Path, config: DistillConfig, project: Project
) -> None:
    """Write `adapter/` (LoRA) and the merged bf16 `model/`, each through a temp folder."""
    tokenizer, folder = student.tokenizer, student.folder
    if config.tuning == "lora":
        _atomic_folder(out / "adapter", lambda tmp: model.save_pretrained(tmp))
        # Merged in float32 (the weights trained against), then stored as bfloat16; never
        # merged into a quantized base (peft#2321).
        merged = copy.deepcopy(model).merge_and_unload()
    else:
        merged = model
    info = (
        json.loads((folder / "minime.json").read_text())
        if (folder / "minime.json").exists()
        else {}
    )
    meta = {
        "student": project.config.models.student,
        "base": info,
        "method": config.method,
        "mode": student.mode,
        "tuning": config.tuning,
        "end_of_turn_ids": end_of_turn_ids(tokenizer),
        "chat_template": tokenizer.chat_template,
    }

    def save(tmp: Path) -> None:
        merged.to(torch.bfloat16).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "minime.json").write_text(json.dumps(meta, indent=2) + "\n")

    _atomic_folder(out / layout.MODEL, save)
    if merged is model:
        model.to(torch.float32)


def _atomic_folder(target: Path, write) -> None:
    """Write a folder through a temp sibling and swap it into place."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _best_step(state) -> int | None:
    if state.best_model_checkpoint:
        return int(Path(state.best_model_checkpoint).name.split("-")[1])
    return None


def _evaluate_and_report(
    project: Project,
    model,
    student: _Student,
    config: DistillConfig,
    dataset: _Dataset,
    figures: TrainingFigures,
) -> DistillReport:
    """Per-fact recall on training and validation questions, and the persona's own held-out
    questions (`eval.questions`, category "fact"), with the trained model."""
    tokenizer, end_ids = student.tokenizer, student.end_ids
    train_probe = _sample_per_fact(_recall_probe(dataset.train_rows, project.name))
    val_probe = [(row, keys) for row, keys in dataset.probe if keys is not None]
    per_fact: dict[str, dict[str, list[bool]]] = defaultdict(lambda: {"train": [], "val": []})
    for split, items in (("train", train_probe), ("val", val_probe)):
        answers = generate_answers(model, tokenizer, [row for row, _ in items], end_ids)
        for answer, (row, keys) in zip(answers, items, strict=True):
            per_fact[row["fact"]][split].append(recalls(answer, keys))
    persona, failures = _persona_accuracy(project, model, tokenizer, end_ids)
    history, tokens, seconds = figures.history, figures.tokens, figures.seconds
    evals = [h for h in history if "eval_loss" in h]
    train_losses = [h["loss"] for h in history if "loss" in h]
    return DistillReport(
        student=project.config.models.student,
        method=config.method,
        mode=student.mode,
        tuning=config.tuning,
        trainable_parameters=figures.trainable_parameters,
        train_rows=len(dataset.train_rows),
        repeated_fact_rows=dataset.repeated,
        chained_rows=dataset.chained,
        val_rows=len(dataset.val_rows),
        skipped_too_long=dataset.skipped,
        steps=figures.steps,
        epochs=round(figures.epochs, 2),
        tokens=tokens,
        seconds=round(seconds, 1),
        tokens_per_second=round(tokens / max(seconds, 1e-9), 1),
        final_train_loss=train_losses[-1] if train_losses else None,
        best_val_loss=min((h["eval_loss"] for h in evals), default=None),
        best_fact_recall=max((h.get("eval_fact_recall", 0) for h in evals), default=None),
        kept_step=figures.kept_step,
        fact_recall_train=_share([v for f in per_fact.values() for v in f["train"]]),
        fact_recall_val=_share([v for f in per_fact.values() for v in f["val"]]),
        persona_fact_accuracy=persona,
        per_fact={
            fact: {"train": _share(v["train"]), "val": _share(v["val"])}
            for fact, v in per_fact.items()
        },
        persona_failures=failures,
        history=history,
    )


def _sample_per_fact(probe: list[tuple[dict, set[str]]]) -> list[tuple[dict, set[str]]]:
    taken: dict[str, int] = defaultdict(int)
    sample = []
    for row, keys in probe:
        if taken[row["fact"]] < TRAIN_PROBES_PER_FACT:
            taken[row["fact"]] += 1
            sample.append((row, keys))
    return sample


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _persona_accuracy(project: Project, model, tokenizer, end_ids) -> tuple[float | None, list]:
    """Share of the persona's fact questions answered with every expected pattern."""
    path = project.questions_path
    if not path.is_file():
        return None, []
    items = [q for q in load_jsonl(path) if q.get("category") == "fact"]
    if not items:
        return None, []
    rows = [{"messages": [{"role": "user", "content": q["question"]}, {}]} for q in items]
    answers = generate_answers(model, tokenizer, rows, end_ids)
    failures = []
    for item, answer in zip(items, answers, strict=True):
        present = not missing(item.get("must_contain", []), answer)
        absent = not any(find(p, answer) for p in item.get("must_not_contain", []))
        if not (present and absent):
            failures.append({"question": item["question"], "answer": answer})
    return round(1 - len(failures) / len(items), 4), failures


def _plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="#4c78a8")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="validation loss", color="#f58518")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    recall = [(h["step"], h["eval_fact_recall"]) for h in history if "eval_fact_recall" in h]
    if recall:
        right = ax.twinx()
        right.plot(*zip(*recall, strict=True), "s--", color="#54a24b", label="val fact recall")
        right.set_ylabel("fact recall")
        right.set_ylim(0, 1)
        right.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.set_title("minime distill")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(report: DistillReport) -> str:
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.0f}%"

    lines = [
        f"# Distilled student: {report.student}",
        "",
        f"Method {report.method} ({report.mode}), {report.tuning} tuning, "
        f"{report.trainable_parameters:,} trainable parameters.",
        "",
        "| | |",
        "| --- | --- |",
        f"| rows | {report.train_rows} train (+{report.repeated_fact_rows} repeats of "
        f"facts' rows, +{report.chained_rows} chained), {report.val_rows} validation, "
        f"{report.skipped_too_long} too long |",
        f"| steps | {report.steps} ({report.epochs} epochs), kept step {report.kept_step} |",
        f"| time | {report.seconds:.0f} s, {report.tokens_per_second:.0f} tokens/s |",
        f"| final train loss | {report.final_train_loss} |",
        f"| best validation loss | {report.best_val_loss} |",
        f"| fact recall | train {pct(report.fact_recall_train)}, "
        f"validation {pct(report.fact_recall_val)} |",
        f"| persona's held-out fact questions | {pct(report.persona_fact_accuracy)} |",
        "",
        "![loss curve](loss_curve.png)",
        "",
        "## Recall per fact",
        "",
        "| train | validation | fact |",
        "| ---: | ---: | --- |",
    ]
    ordered = sorted(report.per_fact.items(), key=lambda kv: (kv[1]["val"] or 0, kv[0]))
    lines += [f"| {pct(v['train'])} | {pct(v['val'])} | {fact} |" for fact, v in ordered]
    if report.persona_failures:
        lines += ["", "## Held-out questions answered wrong", ""]
        lines += [f"- **{f['question']}** {f['answer']}" for f in report.persona_failures]
    return "\n".join(lines) + "\n"
