"""`minime deploy`: the container and Cloud Run files that serve a project.

Writes `out/deploy/`, a Docker build context:

- `Dockerfile`: its base image a build argument (`BASE_IMAGE`, default python:3.11-slim;
  any Debian with Python 3.11 and its venv module, such as a local debootstrap image);
  llama-cpp-python built with `-DGGML_NATIVE=OFF` in a build stage (a native build uses
  the build machine's CPU features, which the machine that runs the image may lack)
  unless `wheels/` holds it; a venv in /opt/venv; a non-root user; `CMD` runs
  `minime serve` on `$PORT`;
- `wheels/`: the llama-cpp-python wheel that `scripts/setup.sh` built with those flags,
  when its cache has one (hard linked), so that the image build compiles nothing;
- `requirements.txt`: the serving dependencies, pinned to the versions installed here
  (no torch or transformers: serving needs none);
- `minime/`: this minime package, on the image's PYTHONPATH;
- `project/`: `minime.yaml` and `profile.md`, and the exported default GGUF with its
  manifest (or, for a project with no export, the chat model's GGUF in `model/`);
- `.dockerignore`, `service.yaml` (Cloud Run: scale to zero, max instances, concurrency,
  startup CPU boost) and `deploy.sh` (the `gcloud run deploy` command).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
import shlex
import shutil
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from minime.config import CloudRunConfig
from minime.errors import InputError
from minime.fileio import write_text_atomic
from minime.layout import EXPORT_MANIFEST
from minime.project import Project
from minime.registry import resolve
from minime.serve.model import exported_gguf

PORT = 8080
#: The build context's folder for a GGUF that is not an export (the chat model).
CONTEXT_MODEL_DIR = "model"
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
"""The image's llama.cpp build flags (portable); a cached wheel is reused only if built so."""
SERVING_PACKAGES = (
    "llama-cpp-python",
    "starlette",
    "uvicorn",
    "pydantic",
    "pyyaml",
    "typer",
    "rich",
    "numpy",
)
"""What `minime serve` imports, besides the standard library (pinned in requirements.txt)."""


class DeployReport(BaseModel):
    """What `deploy` wrote."""

    folder: Path = Field(description="The Docker build context, out/deploy/.")
    mode: str = Field(description="distilled (an exported GGUF) or profile-prompted.")
    model: str = Field(description="The GGUF in the image, relative to the build context.")
    model_bytes: int = Field(description="Its size.")
    command: list[str] = Field(description="The container's CMD.")
    gcloud: str = Field(description="The command that builds and deploys the service.")


def deploy(project: Project, *, quant: str | None = None) -> DeployReport:
    """Write the Docker build context and Cloud Run files for `project` to out/deploy/.

    Serves the exported default GGUF (or `quant`) when `out/export/export.json` exists,
    else the profile-prompted assistant with `models.chat`, which must then be a GGUF
    that carries its own chat template. Rerunning replaces the folder's content.

    :raises InputError: if the export is broken or the chat model cannot go in an image.
    :raises ModelNotFoundError: if the chat model resolves to nothing.
    """
    out = project.out_dir("deploy")
    config = project.config.serve
    cloud = config.cloud_run
    service = cloud.service or _service_name(project.root.resolve().name)
    args = ["--host", "0.0.0.0", "--threads", str(cloud.cpu), "--forwarded-proxies", "1"]
    manifest = project.root / EXPORT_MANIFEST
    if manifest.is_file():
        mode = "distilled"
        source = exported_gguf(manifest.parent, quant)
        model = Path("project") / EXPORT_MANIFEST.parent / source.name
        _write_manifest(manifest, source, out / "project" / EXPORT_MANIFEST)
    else:
        if quant is not None:
            raise InputError(f"{manifest}: no export to pick quant {quant} from")
        mode = "profile-prompted"
        source = _chat_gguf(project)
        model = Path(CONTEXT_MODEL_DIR) / source.name
        (out / "project" / EXPORT_MANIFEST).unlink(missing_ok=True)
        args = ["--model", model.as_posix(), "--profile", *args]  # the profile in its prompt
    _place_model(source, out, model)
    _place_wheels(out / "wheels")
    _copy_project_files(project, out / "project")
    _copy_package(out / "minime")
    command = ["python", "-m", "minime", "serve", "project", *args]
    size = source.stat().st_size
    memory = cloud.memory or f"{max(1, math.ceil((size * 1.2 + 512 * 2**20) / 2**30))}Gi"
    concurrency = config.queue_size + 1
    gcloud = shlex.join(
        [
            "gcloud", "run", "deploy", service, "--source", ".",
            "--region", cloud.region,
            "--min-instances", str(cloud.min_instances),
            "--max-instances", str(cloud.max_instances),
            "--concurrency", str(concurrency),
            "--cpu", str(cloud.cpu), "--memory", memory, "--cpu-boost",
            "--timeout", str(cloud.timeout), "--port", str(PORT),
            "--allow-unauthenticated",
        ]
    )  # fmt: skip
    write_text_atomic(out / "requirements.txt", _requirements())
    write_text_atomic(out / "Dockerfile", _dockerfile(command, with_model=mode != "distilled"))
    write_text_atomic(out / ".dockerignore", "**/__pycache__\n**/*.pyc\ndeploy.sh\nservice.yaml\n")
    write_text_atomic(out / "service.yaml", _service_yaml(service, cloud, concurrency, memory))
    script = out / "deploy.sh"
    write_text_atomic(
        script,
        "#!/bin/sh\n"
        "# Written by `minime deploy`: builds this folder's image with Cloud Build and\n"
        "# deploys it to Cloud Run. Needs gcloud, logged in, with a default project\n"
        "# (gcloud config set project PROJECT_ID).\n"
        'set -eu\ncd "$(dirname "$0")"\n' + gcloud + "\n",
    )
    script.chmod(0o755)
    return DeployReport(
        folder=out,
        mode=mode,
        model=model.as_posix(),
        model_bytes=size,
        command=command,
        gcloud=gcloud,
    )


def _service_name(folder: str) -> str:
    """A Cloud Run service name from a folder name: lower case letters, digits and dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", folder.lower()).strip("-")[:38].strip("-")
    if not slug or not slug[0].isalpha():
        slug = f"minime-{slug}".strip("-")
    return f"{slug}-assistant"


def _chat_gguf(project: Project) -> Path:
    """The profile-prompted mode's model file.

    :raises InputError: if `models.chat` is not a GGUF with its own chat template.
    """
    spec = project.config.models.chat
    model = resolve(spec)
    if model.kind != "gguf" or model.path is None:
        raise InputError(
            f"{spec}: models.chat must be a GGUF to go in the image (run `minime export` "
            "to deploy the distilled model instead)"
        )
    if model.chat_template is not None:
        raise InputError(
            f"{spec}: this GGUF has no chat template of its own (minime supplies it), so it "
            "cannot be served from a file; use an instruct model or deploy an export"
        )
    return model.path


def _write_manifest(manifest: Path, source: Path, dst: Path) -> None:
    """The export manifest as the image has it: only the file that is served."""
    data = json.loads(manifest.read_text(encoding="utf-8"))
    entries = [entry for entry in data["files"] if entry["path"] == source.name]
    quant = entries[0]["quant"] if entries else data["default"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dst, json.dumps({**data, "default": quant, "files": entries}, indent=2))


def _place_model(source: Path, out: Path, model: Path) -> None:
    """Put the GGUF at `out/model`: a hard link where the file system allows (no second
    copy of the weights), else a copy; GGUFs of earlier deploys are removed."""
    dst = out / model
    for old in [*out.glob("model/*.gguf"), *out.glob(f"project/{EXPORT_MANIFEST.parent}/*.gguf")]:
        if old != dst:
            old.unlink()
    if dst.exists() and os.path.samefile(source, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, dst)


def wheel_cache() -> Path:
    """Where `scripts/setup.sh` keeps the llama-cpp-python wheels it built, by flags."""
    home = Path(os.environ.get("MINIME_HOME") or Path.home() / ".cache" / "minime")
    return Path(os.environ.get("MINIME_WHEEL_CACHE") or home / "wheels")


def cached_llama_wheel() -> Path | None:
    """The cached llama-cpp-python wheel that matches the image: the version pinned in
    requirements.txt, built with LLAMA_CMAKE_ARGS (setup.sh keys its cache folder by a
    hash of both), for any Python 3 (or 3.11) on x86-64 Linux, as Cloud Run runs."""
    version = importlib.metadata.version("llama-cpp-python")
    key = hashlib.sha256(f"{version} {LLAMA_CMAKE_ARGS}".encode()).hexdigest()[:12]
    folder = wheel_cache() / f"llama-cpp-python-{key}"
    for wheel in sorted(folder.glob(f"llama_cpp_python-{version}-*.whl")):
        python, abi, platform = wheel.stem.split("-")[-3:]
        if (
            python in ("py3", "cp311")
            and abi in ("none", "abi3", "cp311")
            and (platform.endswith("x86_64") and "linux" in platform)
        ):
            return wheel
    return None


def _place_wheels(dst: Path) -> None:
    """Link the cached llama-cpp-python wheel into `dst` (which the Dockerfile copies;
    left empty without one, and the image then compiles it)."""
    dst.mkdir(parents=True, exist_ok=True)
    wheel = cached_llama_wheel()
    for old in dst.glob("llama_cpp_python-*.whl"):
        if wheel is None or old.name != wheel.name:
            old.unlink()
    if wheel is not None and not (dst / wheel.name).exists():
        try:
            os.link(wheel, dst / wheel.name)
        except OSError:
            shutil.copyfile(wheel, dst / wheel.name)


def _copy_project_files(project: Project, dst: Path) -> None:
    """The config and profile, which `minime serve project` reads."""
    dst.mkdir(parents=True, exist_ok=True)
    config = project.root / "minime.yaml"
    if config.is_file():
        write_text_atomic(dst / "minime.yaml", config.read_text(encoding="utf-8"))
    else:
        (dst / "minime.yaml").unlink(missing_ok=True)
    profile = dst / project.config.profile
    profile.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(profile, project.profile + "\n")


def _copy_package(dst: Path) -> None:
    """This minime package's source (with the widget), replacing an earlier copy whole."""
    import minime

    tmp = dst.with_name(f".{dst.name}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(
        Path(minime.__file__).parent, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def _requirements() -> str:
    lines = [f"{name}=={importlib.metadata.version(name)}" for name in SERVING_PACKAGES]
    return "# The packages `minime serve` needs, at the versions minime was tested with.\n" + (
        "\n".join(lines) + "\n"
    )


def _dockerfile(command: list[str], *, with_model: bool) -> str:
    # sh -c so that $PORT (set by Cloud Run) is expanded; exec so that Python gets SIGTERM
    # and finishes the answers in flight before the container stops.
    shell = "exec " + shlex.join(command) + ' --port "${PORT}"'
    cmd = json.dumps(["sh", "-c", shell])
    model = "COPY model/ /app/model/\n" if with_model else ""
    return f"""\
# Written by `minime deploy`. Build from this folder: docker build -t IMAGE .
# BASE_IMAGE: any Debian-like image with Python 3.11 and its venv module, e.g. one made
# locally with debootstrap when Docker Hub cannot be reached.
ARG BASE_IMAGE=python:3.11-slim
FROM ${{BASE_IMAGE}} AS build
# Portable llama.cpp: a native build would use this machine's CPU features, which the
# machine that runs the image may lack (it crashes on the first token).
ENV CMAKE_ARGS="{LLAMA_CMAKE_ARGS}"
# PIP_OPTIONS: e.g. --no-index for an offline build, when wheels/ holds every package.
ARG PIP_OPTIONS=""
COPY requirements.txt /tmp/requirements.txt
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv
# wheels/ holds llama-cpp-python already built with these flags when `minime deploy`
# found one in its cache: then nothing is compiled here.
RUN if ! ls /wheels/llama_cpp_python-*.whl >/dev/null 2>&1; then \\
        apt-get update && apt-get install -y --no-install-recommends build-essential cmake \\
        && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels \\
            "$(grep '^llama-cpp-python==' /tmp/requirements.txt)"; \\
    fi \\
    && /opt/venv/bin/pip install --no-cache-dir $PIP_OPTIONS --find-links /wheels \\
        -r /tmp/requirements.txt

FROM ${{BASE_IMAGE}}
# llama.cpp needs OpenMP's runtime (python:3.11-slim lacks it; a local base may have it).
RUN if ! ldconfig -p | grep -q libgomp.so.1; then \\
        apt-get update && apt-get install -y --no-install-recommends libgomp1 \\
        && rm -rf /var/lib/apt/lists/*; \\
    fi \\
    && useradd --create-home --uid 10001 minime
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY minime/ /app/minime/
{model}COPY --chown=minime:minime project/ /app/project/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PORT={PORT}
USER minime
EXPOSE {PORT}
CMD {cmd}
"""


def _service_yaml(service: str, cloud: CloudRunConfig, concurrency: int, memory: str) -> str:
    spec = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": service},
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {
                        "autoscaling.knative.dev/minScale": str(cloud.min_instances),
                        "autoscaling.knative.dev/maxScale": str(cloud.max_instances),
                        "run.googleapis.com/startup-cpu-boost": "true",
                    }
                },
                "spec": {
                    "containerConcurrency": concurrency,
                    "timeoutSeconds": cloud.timeout,
                    "containers": [
                        {
                            "image": "IMAGE",
                            "ports": [{"name": "http1", "containerPort": PORT}],
                            "resources": {"limits": {"cpu": str(cloud.cpu), "memory": memory}},
                            "startupProbe": {
                                "httpGet": {"path": "/healthz", "port": PORT},
                                "periodSeconds": 1,
                                "timeoutSeconds": 1,
                                "failureThreshold": 240,
                            },
                        }
                    ],
                },
            }
        },
    }
    header = (
        "# Written by `minime deploy`. Cloud Run service; to use it instead of deploy.sh,\n"
        "# build and push the image, put its name in place of IMAGE, then run:\n"
        "#   gcloud run services replace service.yaml\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False)
