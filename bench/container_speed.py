"""The Cloud Run image from `minime deploy`: its size, its build time, and its cold start
beside the bare process's.

Builds the image for a project whose export is the bundled SmolLM2 GGUF (or --model),
on a local Debian bookworm base (Docker Hub is not reachable here; python:3.11-slim is
the same Debian and Python), with a Docker engine of its own (root; no bridge network,
containers on the host network, every request to 127.0.0.1). Then, in turns, `--runs`
times each:

- container: `docker run` called, to the first streamed token of a first question;
- bare process: the Dockerfile's CMD run outside Docker in the build context, from
  process start to the first streamed token of the same question;

and prints the medians and their ratio. Image pull and Cloud Run's scheduling cannot be
measured here.

    .venv/bin/python bench/container_speed.py [--model smollm2-135m-instruct|FILE.gguf]
        [--runs 3] [--cpu 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_container_engine import DockerEngine, build_image, image_bytes
from test_serve_deploy import dockerfile_command, make_project
from test_serve_fakes import free_port

QUESTION = "What is the capital of France?"


def first_token(url: str, start: float, limit: float = 120) -> tuple[float, float]:
    """Poll until the server answers, then stream one question; returns (seconds from
    `start` to listening, seconds from `start` to its first token)."""
    deadline = start + limit
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            break
        except httpx.TransportError:
            if time.perf_counter() > deadline:
                raise RuntimeError("no /healthz in time") from None
            time.sleep(0.01)
    listening = time.perf_counter() - start
    body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "max_tokens": 8}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            choices = json.loads(line[6:])["choices"] if line.startswith("data: {") else []
            if choices and choices[0]["delta"].get("content"):
                return listening, time.perf_counter() - start
    raise RuntimeError("no token")


def container_cold(engine: DockerEngine, tag: str) -> tuple[float, float]:
    port = free_port()
    name = f"minime-bench-{port}"
    start = time.perf_counter()
    engine.docker("run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", tag)
    try:
        return first_token(f"http://127.0.0.1:{port}", start)
    finally:
        engine.docker("rm", "-f", name, check=False)


def bare_cold(folder: Path) -> tuple[float, float]:
    command, env = dockerfile_command(folder)
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, **env, "PORT": str(port), "PATH": path}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return first_token(f"http://127.0.0.1:{port}", start)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=1, help="serve.cloud_run.cpu: --threads")
    args = parser.parse_args()

    from minime.project import Project
    from minime.registry import resolve
    from minime.serve import deploy

    gguf = resolve(args.model).path
    root = Path(tempfile.mkdtemp(prefix="minime-bench-")) / "mara"
    make_project(root, gguf, f"serve:\n  cloud_run:\n    cpu: {args.cpu}\n")
    report = deploy(Project.open(root))
    engine = DockerEngine()
    try:
        first_build = build_image(engine, report.folder, "minime-bench")
        rebuild = build_image(engine, report.folder, "minime-bench")
        size = image_bytes(engine, "minime-bench")
        base = image_bytes(engine, engine.import_base())
        container, bare = [], []
        for _ in range(args.runs):  # in turns, so machine load falls on both alike
            container.append(container_cold(engine, "minime-bench"))
            bare.append(bare_cold(report.folder))
    finally:
        engine.stop()

    def median(runs: list[tuple[float, float]], i: int) -> float:
        return statistics.median(run[i] for run in runs)

    print(
        f"{gguf.name} ({report.model_bytes / 1e6:.0f} MB), --threads {args.cpu}, "
        f"{os.cpu_count()} cores, {args.runs} runs each"
    )
    print(
        f"image {size / 1e6:.0f} MB (base {base / 1e6:.0f} MB, model {report.model_bytes / 1e6:.0f}"
        f" MB); build {first_build:.1f} s on a fresh engine, {rebuild:.1f} s cached"
    )
    print(f"\n{'':16}{'listening s':>13}{'first token s':>15}")
    for name, runs in (("container", container), ("bare process", bare)):
        print(f"{name:16}{median(runs, 0):13.2f}{median(runs, 1):15.2f}")
    print(
        f"{'ratio':16}{median(container, 0) / median(bare, 0):13.2f}"
        f"{median(container, 1) / median(bare, 1):15.2f}"
    )
    print("all runs (listening, first token):", [tuple(round(x, 2) for x in r) for r in container],
          [tuple(round(x, 2) for x in r) for r in bare])  # fmt: skip


if __name__ == "__main__":
    main()
