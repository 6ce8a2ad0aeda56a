"""The real container: `minime deploy`'s folder for an exported project (the bundled
SmolLM2 GGUF as its export) built into an image on a local Debian base, run with
`--network host`, answering /healthz and a streamed question as a non-root user, and
stopping cleanly. Skipped, with the reason, only where no Docker engine can be started
(it needs root: test_container_engine.py)."""

from __future__ import annotations

import json
import time

import httpx2 as httpx
import pytest
from test_container_engine import DockerEngine, EngineUnavailable, build_image, image_bytes
from test_serve_deploy import make_project
from test_serve_fakes import free_port

from minime.project import Project
from minime.serve import deploy

from conftest import bundled_model_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine():
    try:
        engine = DockerEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    yield engine
    engine.stop()


def wait_healthy(url: str, seconds: float = 90) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(f"{url}/healthz", timeout=2).json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"no /healthz within {seconds} s"
            time.sleep(0.1)


def test_the_deployed_image_builds_runs_and_answers(engine, tmp_path):
    gguf = bundled_model_path("smollm2-135m-instruct")
    config = "serve:\n  max_tokens: 16\n  cloud_run:\n    cpu: 1\n"
    report = deploy(Project.open(make_project(tmp_path / "mara", gguf, config)))
    assert list(report.folder.glob("wheels/llama_cpp_python-*.whl"))  # nothing to compile
    build_image(engine, report.folder, "minime-test")
    assert build_image(engine, report.folder, "minime-test") < 30  # cached: seconds
    assert image_bytes(engine, "minime-test") < 1_000_000_000
    port = free_port()
    name = f"minime-test-{port}"
    engine.docker(
        "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", "minime-test"
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_healthy(url)
        body = {"messages": [{"role": "user", "content": "Hello!"}], "stream": True}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        user = engine.docker("exec", name, "id", "-un").stdout.strip()
        uid = engine.docker("exec", name, "id", "-u").stdout.strip()
        engine.docker("stop", "--time", "20", name)
        state = json.loads(engine.docker("inspect", "--format", "{{json .State}}", name).stdout)
        logs = engine.docker("logs", name)
    finally:
        engine.docker("rm", "-f", name, check=False)
    assert health["status"] == "ok" and health["model"] == "mara.q8_0"
    assert response.status_code == 200
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()
    assert (user, uid) == ("minime", "10001")
    assert state["ExitCode"] == 0, logs.stdout + logs.stderr  # a graceful SIGTERM
    assert "Finished server process" in logs.stdout + logs.stderr
