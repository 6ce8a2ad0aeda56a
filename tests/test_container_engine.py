"""Helpers for the container test and bench (no tests here): a Docker engine of their
own, a local Debian base image, and an offline image build of `minime deploy`'s folder.

The engine is Debian's dockerd, started as root under a temporary folder (its own data
root, exec root and socket) with no bridge network and no iptables rules; containers
run with `--network host` and every request goes to 127.0.0.1. Docker Hub is not used:
the base image is `scripts/container-base.sh`'s debootstrap tarball, imported; the
image build runs with no network, its Python packages downloaded here beforehand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "minime-base:bookworm"


class EngineUnavailable(Exception):
    """No Docker engine can be started here (the reason says why)."""


def _cache() -> Path:
    return Path(os.environ.get("MINIME_HOME") or Path.home() / ".cache" / "minime")


class DockerEngine:
    """A dockerd of this process's own; `docker(...)` runs the CLI against it."""

    def __init__(self) -> None:
        if sys.platform != "linux" or os.geteuid() != 0:
            raise EngineUnavailable("starting dockerd needs root on Linux")
        # Installs docker.io and debootstrap where missing, then makes the base tarball.
        script = REPO / "scripts" / "container-base.sh"
        result = subprocess.run([str(script)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise EngineUnavailable(f"{script.name} failed: {result.stderr.strip()[-500:]}")
        self.base_tarball = Path(result.stdout.strip().splitlines()[-1])
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise EngineUnavailable("no dockerd after container-base.sh")
        # /usr/bin/docker is docker.io's own client; another on PATH may want buildx.
        self.cli = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
        self.root = Path(tempfile.mkdtemp(prefix="minime-docker-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.socket}",
            "DOCKER_BUILDKIT": "0",  # the classic builder: docker.io ships no buildx
        }
        self.env.pop("DOCKER_CONTEXT", None)
        log = open(self.root / "dockerd.log", "w")  # noqa: SIM115 (kept open while it runs)
        self.daemon = subprocess.Popen(
            [
                dockerd,
                f"--data-root={self.root / 'data'}",
                f"--exec-root={self.root / 'exec'}",
                f"--pidfile={self.root / 'docker.pid'}",
                f"--host=unix://{self.socket}",
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--userland-proxy=false",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = time.monotonic() + 60
        while self.docker("version", check=False).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                reason = (self.root / "dockerd.log").read_text()[-800:]
                self.stop()
                raise EngineUnavailable(f"dockerd did not start: {reason}")
            time.sleep(0.3)

    def docker(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """Run `docker ARGS` against this engine; output captured as text."""
        result = subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()[-2000:]}")
        return result

    def import_base(self) -> str:
        """The local Debian base image, imported from the cached tarball."""
        if self.docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
            self.docker("import", str(self.base_tarball), BASE_IMAGE)
        return BASE_IMAGE

    def stop(self) -> None:
        """Stop the daemon (and its containers) and remove its folder."""
        if self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        # dockerd leaves mounts under its roots (the default network namespace, overlays).
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(f"{self.root}/")), reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def offline_wheels(context: Path) -> None:
    """Put every package of `context/requirements.txt` in `context/wheels/` as a wheel
    (downloaded here once, cached by the requirements' hash), so that the image builds
    with `--network none` and `PIP_OPTIONS=--no-index`."""
    requirements = (context / "requirements.txt").read_text()
    key = hashlib.sha256(requirements.encode()).hexdigest()[:12]
    cache = _cache() / "wheels" / f"serve-{key}"
    wheels = context / "wheels"
    if not (cache / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
                "--find-links", str(wheels), "--dest", str(cache),
                "-r", str(context / "requirements.txt"),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )  # fmt: skip
        (cache / ".complete").touch()
    for wheel in cache.glob("*.whl"):
        target = wheels / wheel.name
        if not target.exists():
            try:
                os.link(wheel, target)
            except OSError:
                shutil.copyfile(wheel, target)


def build_image(engine: DockerEngine, context: Path, tag: str) -> float:
    """Build `context` (minime deploy's folder) on the local base, offline; seconds."""
    offline_wheels(context)
    start = time.monotonic()
    engine.docker(
        "build", "--network", "none", "-t", tag,
        "--build-arg", f"BASE_IMAGE={engine.import_base()}",
        "--build-arg", "PIP_OPTIONS=--no-index",
        str(context),
    )  # fmt: skip
    return time.monotonic() - start


def image_bytes(engine: DockerEngine, tag: str) -> int:
    return int(engine.docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
