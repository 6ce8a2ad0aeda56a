"""Speed of `minime serve` against bare llama-cpp-python on the same GGUF.

Prints:
- cold start: process start to the first streamed token, for `minime serve` (model load,
  server start-up, the first request) and for a bare llama-cpp-python script, each a
  fresh process, as a scale-to-zero container pays it;
- time to first token p50/p95 and decode tokens/s over sequential streamed requests to
  the warm server (through HTTP and SSE) and to bare `create_chat_completion(stream=True)`
  on the same GGUF, threads and questions, taking turns request by request so that load
  from elsewhere on the machine falls on both alike; and the ratios;
- a load run at the default settings (rate limit off): 8 then 32 concurrent streamed
  requests, every third a 1,990-character question, each counted as answered whole,
  200 but incomplete (cut by the time limit, an in-stream error, or empty), or refused
  before its 200 (429 or 503, with Retry-After).

    .venv/bin/python bench/serve_speed.py [--model smollm2-135m-instruct|FILE.gguf|PROJECT]
        [--threads 1] [--requests 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

from minime.config import ServeConfig

QUESTIONS = [
    "What is the capital of France?",
    "Give me three tips for writing clear code.",
    "What is a large language model?",
    "How do plants make food?",
    "Name two famous painters.",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stream_http(client: httpx.Client, url: str, question: str, max_tokens: int) -> dict:
    """One streamed request: time to first token, decode tokens/s, tokens."""
    body = {
        "messages": [{"role": "user", "content": question}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    start = time.perf_counter()
    first = last = None
    tokens = 0
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return _figures(start, first, last, tokens)


def _figures(start: float, first: float | None, last: float | None, tokens: int) -> dict:
    decode = (tokens - 1) / (last - first) if first and last and last > first else 0.0
    return {"ttft": (first or time.perf_counter()) - start, "decode": decode, "tokens": tokens}


def run_server(target: str, path: Path, args: argparse.Namespace) -> dict:
    """Start `minime serve`, time its cold start, then alternate warm requests with bare
    llama-cpp-python in this process, then the load runs."""

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "minime", "serve", target, "--port", str(port)]
    command += ["--threads", str(args.threads), "--rate-limit", "0", "--queue-size", "8"]
    start = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(timeout=120) as client:
            while True:
                if server.poll() is not None:
                    sys.exit(f"minime serve exited: {server.stderr.read().decode()[-2000:]}")
                try:
                    client.get(f"{url}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.01)
            listening = time.perf_counter() - start
            cold = listening + _stream_http(client, url, QUESTIONS[0], args.max_tokens)["ttft"]
            llm = _load_bare(path, args.threads)
            _bare_answer(llm, QUESTIONS[0], args.max_tokens)  # warm up, as the server is
            served, bare = [], []
            for i in range(args.requests):
                question = QUESTIONS[i % len(QUESTIONS)]
                served.append(_stream_http(client, url, question, args.max_tokens))
                bare.append(_bare_answer(llm, question, args.max_tokens))
            llm.close()
        # The server's own max_tokens (its default, 256): the load run's answers are whole.
        load = {n: asyncio.run(_burst(url, n, ServeConfig().max_tokens)) for n in (8, 32)}
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"listening": listening, "cold": cold, "served": served, "bare": bare, "load": load}


def _long_question(rng: random.Random) -> str:
    """1,990 characters of visitor noise (about 1,600 SmolLM2 tokens, 14 s of prompt on
    one thread): the kind of question that used to get a 200 and no answer."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 .,;!?") for _ in range(1990))


async def _burst(url: str, n: int, max_tokens: int) -> dict:
    """n concurrent streams, every third a long question, at the server's max_tokens."""
    rng = random.Random(n)

    async def one(client: httpx.AsyncClient, question: str) -> str:
        body = {
            "messages": [{"role": "user", "content": question}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            text = (await response.aread()).decode()
            if response.status_code != 200:
                retry = response.headers.get("retry-after", "")
                return f"{response.status_code}" + (" retry-after" if retry.isdigit() else "")
            events = [json.loads(line[6:]) for line in text.splitlines() if line[6:7] == "{"]
            content = "".join(
                e["choices"][0]["delta"].get("content", "") for e in events if e.get("choices")
            )
            reasons = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
            usage = next((e["usage"] for e in events if e.get("usage")), {})
            whole = reasons[-1] == "stop" or (
                reasons[-1] == "length" and usage.get("completion_tokens") == max_tokens
            )
            if any("error" in e for e in events) or not content.strip() or not whole:
                return "200 incomplete"
            return "200 whole"

    questions = [_long_question(rng) if i % 3 == 1 else QUESTIONS[i % 5] for i in range(n)]
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n)) as client:
        results = await asyncio.gather(*(one(client, q) for q in questions))
    counts = {outcome: results.count(outcome) for outcome in sorted(set(results))}
    return {"counts": counts, "seconds": time.perf_counter() - start}


def bare_cold_start(path: Path, threads: int) -> float:
    """Process start to first token of a bare llama-cpp-python script (a fresh process)."""
    command = [sys.executable, __file__, "--bare-cold", str(path), "--threads", str(threads)]
    start = time.time()
    first_token_at = float(subprocess.run(command, capture_output=True, check=True).stdout)
    return first_token_at - start


def _first_token_time(path: Path, threads: int) -> float:
    """In the child process: load the model, ask, and return when the first token came."""
    llm = _load_bare(path, threads)
    for chunk in llm.create_chat_completion(
        [{"role": "user", "content": QUESTIONS[0]}], stream=True, temperature=0, max_tokens=4
    ):
        if chunk["choices"][0]["delta"].get("content"):
            return time.time()
    raise RuntimeError("the model answered nothing")


def _load_bare(path: Path, threads: int):
    from llama_cpp import Llama

    from minime.config import ServeConfig

    return Llama(
        model_path=str(path),
        n_ctx=ServeConfig().n_ctx,
        n_threads=threads,
        n_threads_batch=threads,  # as minime sets it
        verbose=False,
    )


def _bare_answer(llm, question: str, max_tokens: int) -> dict:
    begin = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in llm.create_chat_completion(
        [{"role": "user", "content": question}], stream=True, temperature=0, max_tokens=max_tokens
    ):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            tokens += 1  # llama-cpp-python streams one chunk per token
    return _figures(begin, first, last, tokens)


def _percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--bare-cold", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.bare_cold:
        print(_first_token_time(args.bare_cold, args.threads))
        return

    from minime.layout import EXPORT_MANIFEST
    from minime.registry import resolve
    from minime.serve.model import exported_gguf

    target = Path(args.model)
    if target.is_dir():
        path = exported_gguf((target / EXPORT_MANIFEST).parent)
    else:
        path = resolve(args.model).path
        target = path
    print(
        f"{path.name}: {args.threads} thread(s), greedy, {args.max_tokens} tokens at most, "
        f"{args.requests} sequential requests, {os.cpu_count()} cores"
    )
    result = run_server(str(target), path, args)
    bare_cold = bare_cold_start(path, args.threads)

    rows = []
    for name, cold, runs in (
        ("minime serve", result["cold"], result["served"]),
        ("bare llama-cpp-python", bare_cold, result["bare"]),
    ):
        ttfts = [run["ttft"] for run in runs]
        decode = statistics.median(run["decode"] for run in runs)
        rows.append((name, cold, _percentile(ttfts, 50), _percentile(ttfts, 95), decode))
    print(f"\n{'':24}{'cold start s':>14}{'TTFT p50 s':>12}{'TTFT p95 s':>12}{'decode tok/s':>14}")
    for name, cold, p50, p95, decode in rows:
        print(f"{name:24}{cold:14.2f}{p50:12.3f}{p95:12.3f}{decode:14.1f}")
    (_, cold_s, p50_s, p95_s, dec_s), (_, cold_b, p50_b, p95_b, dec_b) = rows
    print(
        f"{'ratio (serve/bare)':24}{cold_s / cold_b:14.2f}{p50_s / p50_b:12.2f}"
        f"{p95_s / p95_b:12.2f}{dec_s / dec_b:14.2f}"
    )
    print(
        f"\nminime serve listens {result['listening']:.2f} s after its process starts "
        "(model loaded); cold start counts from process start to the first token for both"
    )
    for n, load in result["load"].items():
        outcomes = ", ".join(f"{count} {outcome}" for outcome, count in load["counts"].items())
        print(f"load, {n} concurrent streams (every third a long question): {outcomes}, "
              f"{load['seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
