"""What each exported GGUF costs to serve: size, load time, decode speed and peak RSS.

For a project exported with `minime export`, each file (F16 and the quantizations) loads in
a fresh process and answers the first validation prompts greedily through minime's
llama.cpp backend with the file's embedded template, as the server does. Prints, per file,
size, load time, decode tokens/s, mean answer length, how many answers ended their turn,
and peak RSS.

    .venv/bin/python bench/export_speed.py PROJECT [--source out/distill/model]
        [--threads 1] [--prompts 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def run_file(path: str, prompts: list[list[dict]], threads: int, max_tokens: int) -> dict:
    from minime.backends.base import SamplingParams
    from minime.backends.llamacpp import LlamaCppBackend

    start = time.perf_counter()
    backend = LlamaCppBackend(Path(path), n_ctx=2048, n_threads=threads)
    load = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    tokens, seconds, stopped = 0, 0.0, 0
    for messages in prompts:
        begin = time.perf_counter()
        first = None
        for delta in backend.stream(messages, params):
            first = first or time.perf_counter()
            if delta.usage:
                tokens += delta.usage.completion_tokens - 1
                stopped += delta.finish_reason == "stop"
        seconds += time.perf_counter() - (first or begin)
    backend.close()
    return {
        "load_s": load,
        "decode_tok_s": tokens / seconds if seconds else 0.0,
        "mean_tokens": tokens / len(prompts) + 1,
        "stopped": stopped,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = (args.project / "out" / "data" / "val.jsonl").read_text().splitlines()
    prompts = [json.loads(row)["messages"][:-1] for row in rows[: args.prompts]]
    if args.worker:
        print(json.dumps(run_file(args.worker, prompts, args.threads, args.max_tokens)))
        return

    from minime.export.stage import export_folder
    from minime.layout import exported_ggufs
    from minime.project import Project

    project = Project.open(args.project)
    source = args.source or args.project / "out" / "distill" / "model"
    files = exported_ggufs(export_folder(project, source))
    print(f"{project.name}: {len(prompts)} validation prompts, {args.threads} thread(s)")
    columns = ("file", "MB", "load s", "tok/s", "tokens", "ended", "RSS MB")
    print(f"{columns[0]:<10} " + " ".join(f"{c:>7}" for c in columns[1:]))
    for quant, path in files.items():
        # A fresh process per file, so that peak RSS is that file's own.
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                str(args.project),
                "--worker",
                str(path),
                "--threads",
                str(args.threads),
                "--prompts",
                str(args.prompts),
                "--max-tokens",
                str(args.max_tokens),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{quant:<10} {path.stat().st_size / 1e6:>7.1f} {r['load_s']:>7.2f} "
            f"{r['decode_tok_s']:>7.1f} {r['mean_tokens']:>7.1f} "
            f"{r['stopped']:>4}/{len(prompts):<2} {r['peak_rss_mb']:>7.0f}"
        )


if __name__ == "__main__":
    main()
