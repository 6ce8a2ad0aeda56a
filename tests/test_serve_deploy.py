"""`minime deploy` and the command its container runs: the files it writes, the serving
mode it picks, and (integration) the Dockerfile's CMD run outside Docker, with the real
SmolLM2 GGUF, answering /healthz and a streamed chat."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from typer.testing import CliRunner

from minime.bank import fixed_answer
from minime.cli import app
from minime.config import ServeConfig
from minime.errors import ConfigError, InputError
from minime.guard import GuardedBackend
from minime.project import Project
from minime.serve import deploy, open_served_model, serve_config

from conftest import bundled_model_path

PROFILE = "# Mara Lind\n\nMara works at Verdant Loop, where she builds tiny models.\n"


def make_project(root: Path, gguf: Path | None = None, config: str = "") -> Path:
    """A persona project; with `gguf`, also an export of it (as `minime export` writes one)."""
    root.mkdir(parents=True)
    (root / "profile.md").write_text(PROFILE)
    (root / "minime.yaml").write_text(config)
    if gguf is None:
        return root
    export = root / "out" / "export"
    export.mkdir(parents=True)
    files = []
    for quant in ("q8_0", "q4_k_m"):
        path = export / f"mara.{quant}.gguf"
        os.link(gguf, path)
        files.append({"quant": quant, "path": path.name, "bytes": 1, "sha256": "0" * 64})
    manifest = {
        "source": "out/distill/model",
        "student": "smollm2-135m-instruct",
        "method": "kd",
        "default": "q8_0",
        "files": files,
        "end_of_turn_ids": [2],
        "chat_template": "",
        "verified": True,
    }
    (export / "export.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture
def fake_gguf(tmp_path) -> Path:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"GGUF" + bytes(3 * 2**20))
    return path


def dockerfile_command(folder: Path) -> tuple[list[str], dict[str, str]]:
    """The CMD and ENV of the Dockerfile in `folder`, with /app mapped to `folder`."""
    lines = (folder / "Dockerfile").read_text().splitlines()
    command = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    env = {}
    for line in lines:
        if line.startswith("ENV ") and "=" in line:
            for pair in shlex.split(line[4:]):
                key, _, value = pair.partition("=")
                env[key] = value.replace("/app", str(folder))
    return command, env


def test_deploy_writes_the_image_and_cloud_run_files(tmp_path, fake_gguf):
    root = make_project(tmp_path / "Mara Site", fake_gguf)
    report = deploy(Project.open(root))
    out = root / "out" / "deploy"
    assert report.folder == out and report.mode == "distilled"
    assert report.model == "project/out/export/mara.q8_0.gguf"
    assert os.path.samefile(out / report.model, fake_gguf)  # linked, not copied
    manifest = json.loads((out / "project/out/export/export.json").read_text())
    assert manifest["default"] == "q8_0"
    assert [entry["quant"] for entry in manifest["files"]] == ["q8_0"]
    assert (out / "project/profile.md").read_text() == PROFILE
    assert (out / "minime/serve/static/widget.js").is_file()
    assert (out / "minime/__main__.py").is_file()
    assert not list(out.glob("minime/**/__pycache__"))

    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.startswith("# Written by `minime deploy`")
    assert 'ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"' in dockerfile
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile
    assert dockerfile.count("FROM ${BASE_IMAGE}") == 2
    assert "--find-links /wheels" in dockerfile
    assert "useradd" in dockerfile
    assert dockerfile.index("USER minime") < dockerfile.index("CMD ")
    assert "COPY model/" not in dockerfile  # the GGUF comes with project/
    command, env = dockerfile_command(out)
    assert command == [
        "sh",
        "-c",
        "exec python -m minime serve project --host 0.0.0.0 --threads 2 "
        '--forwarded-proxies 1 --port "${PORT}"',
    ]
    assert env["PORT"] == "8080" and env["PYTHONPATH"] == str(out)
    requirements = (out / "requirements.txt").read_text()
    assert "llama-cpp-python==0.3.36" in requirements and "starlette==" in requirements
    assert "torch" not in requirements
    assert "__pycache__" in (out / ".dockerignore").read_text()

    service = yaml.safe_load((out / "service.yaml").read_text())
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert service["metadata"]["name"] == "mara-site-assistant"
    assert annotations["autoscaling.knative.dev/minScale"] == "0"
    assert annotations["autoscaling.knative.dev/maxScale"] == "3"
    assert annotations["run.googleapis.com/startup-cpu-boost"] == "true"
    assert template["spec"]["containerConcurrency"] == 9  # one answering, eight waiting
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    assert container["ports"][0]["containerPort"] == 8080

    script = out / "deploy.sh"
    assert os.access(script, os.X_OK)
    assert report.gcloud in script.read_text()
    assert report.gcloud.startswith(
        "gcloud run deploy mara-site-assistant --source . --region europe-north1 "
        "--min-instances 0 --max-instances 3 --concurrency 9 --cpu 2 --memory 1Gi --cpu-boost"
    )


def test_deploy_again_with_another_quant_replaces_the_model(tmp_path, fake_gguf):
    config = "serve:\n  queue_size: 3\n  cloud_run:\n    service: mara\n    memory: 2Gi\n"
    root = make_project(tmp_path / "mara", fake_gguf, config)
    project = Project.open(root)
    deploy(project)
    report = deploy(project, quant="q4_k_m")
    out = report.folder
    assert sorted(p.name for p in out.rglob("*.gguf")) == ["mara.q4_k_m.gguf"]
    assert json.loads((out / "project/out/export/export.json").read_text())["default"] == "q4_k_m"
    assert "--concurrency 4" in report.gcloud and "--memory 2Gi" in report.gcloud
    with pytest.raises(InputError, match="no q2_k file"):
        deploy(project, quant="q2_k")


def test_deploy_without_export_bakes_the_profile_prompted_chat_model(tmp_path, fake_gguf):
    root = make_project(tmp_path / "mara", config=f"models:\n  chat: {fake_gguf}\n")
    report = deploy(Project.open(root))
    out = report.folder
    assert report.mode == "profile-prompted"
    assert report.model == "model/weights.gguf"
    assert os.path.samefile(out / "model/weights.gguf", fake_gguf)
    assert "--model model/weights.gguf" in dockerfile_command(out)[0][2]
    assert "COPY model/ /app/model/" in (out / "Dockerfile").read_text()
    assert not (out / "project/out/export/export.json").exists()

    remote = make_project(tmp_path / "remote", config="models:\n  chat: openai:m@http://x/v1\n")
    with pytest.raises(InputError, match="must be a GGUF"):
        deploy(Project.open(remote))


def test_deploy_command_prints_what_to_run(tmp_path, fake_gguf):
    root = make_project(tmp_path / "mara", fake_gguf)
    result = CliRunner().invoke(app, ["deploy", str(root)])
    assert result.exit_code == 0, result.output
    assert "distilled model project/out/export/mara.q8_0.gguf" in result.output
    assert "gcloud run deploy mara-assistant --source ." in result.output


def test_serve_command_reports_bad_targets(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing.txt")])
    assert result.exit_code == 1
    assert "neither a .gguf file nor a project folder" in result.output


def test_serve_settings_come_from_the_project_then_the_options(tmp_path, fake_gguf):
    root = make_project(tmp_path / "mara", config="serve:\n  port: 9000\n  queue_size: 2\n")
    config = serve_config(root, port=None, host="0.0.0.0", threads=1)
    assert (config.port, config.host, config.threads, config.queue_size) == (9000, "0.0.0.0", 1, 2)
    assert serve_config(fake_gguf, port=1234) == ServeConfig(port=1234)
    with pytest.raises(ConfigError, match="--queue-size: Input should be greater than or equal"):
        serve_config(fake_gguf, queue_size=-1)


def test_serving_imports_no_training_libraries():
    blocked = ["torch", "transformers", "sentence_transformers", "peft", "accelerate", "trl"]
    blocked.append("fastapi")  # Starlette alone serves: a faster cold start
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import uvicorn\n"
        "from minime.cli import app\n"
        "from minime.serve import create_app, deploy, open_served_model, serve\n"
        "from minime.backends.llamacpp import LlamaCppBackend\n"
        "import minime.export\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout == "ok\n", result.stderr


@pytest.mark.integration
def test_open_served_model_picks_export_profile_or_gguf(tmp_path):
    gguf = bundled_model_path("smollm2-135m-instruct")
    config = ServeConfig(threads=1, n_ctx=512)
    root = make_project(tmp_path / "mara", gguf)
    exported = open_served_model(root, config)
    with pytest.raises(InputError, match="no f16 file"):
        open_served_model(root, config, quant="f16")
    prompted = open_served_model(root, config, model=str(gguf))
    bare = open_served_model(gguf, config)
    try:
        assert (exported.id, exported.title, exported.system) == ("mara.q8_0", "Mara Lind", None)
        assert prompted.id == "mara-profile"
        assert "Mara works at Verdant Loop" in prompted.system
        assert prompted.messages([{"role": "user", "content": "Hi"}])[0]["role"] == "system"
        assert bare.id == gguf.stem and bare.system is None
        # Only the distilled model is guarded, and its speed is the model's own.
        assert isinstance(exported.backend, GuardedBackend) and exported.speed is not None
        assert prompted.guard is None and bare.guard is None
        assert exported.n_ctx == 512
    finally:
        for served in (exported, prompted, bare):
            served.backend.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_the_container_command_serves_outside_docker(tmp_path):
    gguf = bundled_model_path("smollm2-135m-instruct")
    config = "serve:\n  max_tokens: 16\n  cloud_run:\n    cpu: 1\n"  # --threads 1
    root = make_project(tmp_path / "mara", gguf, config)
    out = deploy(Project.open(root)).folder
    command, env = dockerfile_command(out)
    port = _free_port()
    # The image's environment: its ENV lines, the port Cloud Run sets, and `python` on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, **env, "PORT": str(port), "PATH": path}
    assert shutil.which("python", path=path)
    server = subprocess.Popen(
        command, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                health = httpx.get(f"{url}/healthz").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start in 60 s"
                time.sleep(0.2)
        body = {"messages": [{"role": "user", "content": "Hello!"}], "stream": True}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        off_topic = {"messages": [{"role": "user", "content": "Who painted Guernica?"}]}
        declined = httpx.post(f"{url}/v1/chat/completions", json=off_topic, timeout=60).json()
        page = httpx.get(url)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    log = server.stdout.read()
    assert health["model"] == "mara.q8_0"
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    # The serving guard answers a question about nothing of hers without the model.
    decline = fixed_answer("out_of_scope", "en", "Mara Lind")
    assert declined["choices"][0]["message"]["content"] == decline
    assert "Mara Lind" in page.text
    assert f"Uvicorn running on http://0.0.0.0:{port}" in log
    # A graceful stop exits 0 (uvicorn alone re-raises SIGTERM: 143).
    assert "Finished server process" in log
    assert code == 0, log


def test_deploy_links_the_cached_llama_wheel_that_matches(tmp_path, fake_gguf, monkeypatch):
    import hashlib
    import importlib.metadata

    version = importlib.metadata.version("llama-cpp-python")
    key = hashlib.sha256(f"{version} -DGGML_NATIVE=OFF".encode()).hexdigest()[:12]
    cache = tmp_path / "wheels"
    folder = cache / f"llama-cpp-python-{key}"
    folder.mkdir(parents=True)
    other = cache / "llama-cpp-python-000000000000"  # built with other flags
    other.mkdir()
    (other / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl").write_bytes(b"x")
    monkeypatch.setenv("MINIME_WHEEL_CACHE", str(cache))
    root = make_project(tmp_path / "mara", fake_gguf)
    (folder / f"llama_cpp_python-{version}-py3-none-macosx_11_0_arm64.whl").write_bytes(b"m")
    assert list(deploy(Project.open(root)).folder.glob("wheels/*")) == []  # no match: compile
    wheel = folder / f"llama_cpp_python-{version}-py3-none-linux_x86_64.whl"
    wheel.write_bytes(b"w")
    wheels = list(deploy(Project.open(root)).folder.glob("wheels/*"))
    assert [path.name for path in wheels] == [wheel.name]
    assert os.path.samefile(wheels[0], wheel)  # linked, not copied
