"""Training speed of `minime distill` against TRL's SFTTrainer on the same model and data.

Both train the same student (the converted bundled GGUF) for one epoch on the same rows of
a `train.jsonl`, with the same batch size, learning rate, precision and threads, full
tuning, cross-entropy only (minime's `sft` method), no evaluation. Each runs in its own
process. Prints tokens/s (non-padding tokens seen per second of training) and the ratio.

    .venv/bin/python bench/distill_speed.py [--data examples/mara/out/data/train.jsonl]
        [--rows 128] [--student smollm2-135m-instruct] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_minime(args) -> dict:
    """One epoch of `minime distill` (method sft, full tuning) on a throwaway project."""
    from minime.distill import distill
    from minime.project import Project

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "out" / "data").mkdir(parents=True)
        (root / "profile.md").write_text("# Bench\n\n- A profile.\n")
        rows = Path(args.data).read_text().splitlines()[: args.rows]
        (root / "out" / "data" / "train.jsonl").write_text("\n".join(rows) + "\n")
        (root / "minime.yaml").write_text(
            f"models:\n  student: {args.student}\ndistill:\n  method: sft\n  tuning: full\n"
            f"  batch_size: {args.batch}\n  max_epochs: 1\n  threads: {args.threads}\n"
            "  learning_rate: 0.0001\n  warmup_ratio: 0.0\n  dtype: float32\n"
        )
        report = distill(Project.open(root))
    return {"tokens": report.tokens, "seconds": report.seconds}


def run_trl(args) -> dict:
    """One epoch of TRL's SFTTrainer with the same settings."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from minime.student import load_student, student_folder

    torch.set_num_threads(args.threads)
    model, tokenizer = load_student(student_folder(args.student))
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[: args.rows]]
    dataset = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp,
            per_device_train_batch_size=args.batch,
            num_train_epochs=1,
            learning_rate=1e-4,
            lr_scheduler_type="cosine",
            max_length=512,
            use_cpu=True,
            # SFTConfig's defaults turn on bf16 and activation checkpointing; minime's run
            # here uses neither (bf16 autocast is slower than float32 on CPUs without AMX).
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            save_strategy="no",
            logging_steps=10,
            seed=0,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=dataset, processing_class=tokenizer
        )
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        started = time.monotonic()
        trainer.train()
        seconds = time.monotonic() - started
    return {"tokens": tokens, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "examples/mara/out/data/train.jsonl"))
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--student", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["minime", "trl"])
    args = parser.parse_args()
    if args.only:
        result = run_minime(args) if args.only == "minime" else run_trl(args)
        print("RESULT " + json.dumps(result))
        return
    results = {}
    for name in ("minime", "trl"):
        command = [sys.executable, __file__, "--only", name, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        results[name] = json.loads(line.removeprefix("RESULT "))
    print(
        f"{args.rows} rows of {args.data}, {args.student}, batch {args.batch}, "
        f"{args.threads} threads, full tuning, fp32, one epoch"
    )
    print(f"{'trainer':<8} {'tokens':>8} {'seconds':>8} {'tokens/s':>9}")
    rates = {}
    for name, result in results.items():
        rates[name] = result["tokens"] / result["seconds"]
        print(f"{name:<8} {result['tokens']:>8} {result['seconds']:>8.1f} {rates[name]:>9.1f}")
    print(f"minime/TRL tokens/s: {rates['minime'] / rates['trl']:.2f}x")


if __name__ == "__main__":
    main()
