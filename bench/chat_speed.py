"""Speed of `minime chat` against bare llama-cpp-python on the same GGUF.

For each bundled chat model, two fresh processes (so peak RSS is each one's own) answer
the same two questions about the example persona, greedy, with the profile in the system
prompt: the first question evaluates the profile (cold), the second reuses its KV cache
(warm). Prints time to first token, decode tokens/s and peak RSS, and minime/bare ratios.

    .venv/bin/python bench/chat_speed.py [--models NAME ...] [--threads 2] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mara"
QUESTIONS = ["What does Mara do at Verdant Loop?", "What is tinyshade?"]
CHAT_MODELS = [
    "smollm2-135m-instruct",
    "qwen2.5-coder-0.5b-instruct",
    "qwen2.5-coder-1.5b-instruct",
]


def _timed(stream, count_tokens):
    """Consume a stream of text pieces; return (time to first text, decode tokens/s, tokens)."""
    start = time.perf_counter()
    first, pieces = None, []
    for text in stream:
        if text and first is None:
            first = time.perf_counter()
        pieces.append(text)
    end = time.perf_counter()
    tokens = count_tokens("".join(pieces))
    decode = (tokens - 1) / (end - first) if first and end > first and tokens > 1 else 0.0
    return (first or end) - start, decode, tokens


def run_minime(model: str, threads: int, max_tokens: int) -> dict:
    from minime.chat import open_chat
    from minime.project import Project

    project = Project.open(EXAMPLE)
    project.config.chat.n_threads = threads
    project.config.chat.max_tokens = max_tokens
    project.config.chat.temperature = 0.0
    load_start = time.perf_counter()
    assistant = open_chat(project, model)
    load = time.perf_counter() - load_start
    llm = assistant.backend._llm
    results = []
    for question in QUESTIONS:
        results.append(
            _timed(
                (d.text for d in assistant.stream(question)),
                lambda text: len(llm.tokenize(text.encode(), add_bos=False)),
            )
        )
    return _report(load, results)


def run_bare(model: str, threads: int, max_tokens: int) -> dict:
    from minime.chat import system_prompt
    from minime.project import Project
    from minime.registry import resolve

    project = Project.open(EXAMPLE)
    system = system_prompt(project.name, project.profile)
    load_start = time.perf_counter()
    from llama_cpp import Llama  # imported here, as minime does, so load times compare

    llm = Llama(
        model_path=str(resolve(model).path),
        n_ctx=project.config.chat.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    load = time.perf_counter() - load_start
    results = []
    for question in QUESTIONS:
        chunks = llm.create_chat_completion(
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            temperature=0.0,
            max_tokens=max_tokens,
            stream=True,
        )
        results.append(
            _timed(
                (c["choices"][0]["delta"].get("content", "") for c in chunks),
                lambda text: len(llm.tokenize(text.encode(), add_bos=False)),
            )
        )
    return _report(load, results)


def _report(load: float, results: list[tuple[float, float, int]]) -> dict:
    (cold_ttft, cold_rate, cold_n), (warm_ttft, warm_rate, warm_n) = results
    return {
        "load_s": load,
        "ttft_cold_s": cold_ttft,
        "ttft_warm_s": warm_ttft,
        "decode_tok_s": (cold_rate * cold_n + warm_rate * warm_n) / max(cold_n + warm_n, 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=CHAT_MODELS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--worker", choices=["minime", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run = run_minime if args.worker == "minime" else run_bare
        print(json.dumps(run(args.models[0], args.threads, args.max_tokens)))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(
        "model",
        "path",
        "load s",
        "TTFT cold s",
        "TTFT warm s",
        "decode tok/s",
        "peak RSS MB",
        title=f"minime chat vs bare llama-cpp-python ({args.threads} threads, greedy, "
        f"{args.max_tokens} tokens max)",
    )
    keys = ["load_s", "ttft_cold_s", "ttft_warm_s", "decode_tok_s", "peak_rss_mb"]
    for model in args.models:
        rows = {}
        for worker in ("minime", "bare"):
            output = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    worker,
                    "--models",
                    model,
                    "--threads",
                    str(args.threads),
                    "--max-tokens",
                    str(args.max_tokens),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows[worker] = json.loads(output.strip().splitlines()[-1])
            table.add_row(model, worker, *(f"{rows[worker][k]:.2f}" for k in keys))
        ratio = [rows["minime"][k] / rows["bare"][k] if rows["bare"][k] else 0 for k in keys]
        table.add_row(model, "ratio", *(f"{r:.2f}x" for r in ratio), end_section=True)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
