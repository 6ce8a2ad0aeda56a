"""Run the server: load the model, then listen (so the port opens only once it can answer)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from minime.config import ServeConfig
from minime.errors import ConfigError
from minime.layout import REQUEST_LOG
from minime.project import Project
from minime.serve.app import create_app
from minime.serve.model import open_served_model

MAX_CONNECTIONS = 256
"""Open connections at most, well under the usual 1,024 file descriptors (a slow client
holds one for up to HEAD_TIMEOUT seconds)."""
HEAD_TIMEOUT = 10.0
"""Seconds a connection may take to send a whole request head (slowloris)."""


def serve_config(target: Path, **overrides: Any) -> ServeConfig:
    """The server settings for `target`: a project's `serve:` section (defaults for a bare
    GGUF), with the `overrides` that are not None on top.

    :raises ConfigError: if the project's minime.yaml or an override is invalid.
    """
    target = Path(target)
    config = Project.open(target).config.serve if target.is_dir() else ServeConfig()
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return ServeConfig.model_validate({**config.model_dump(), **given})
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(map(str, error["loc"]))
        raise ConfigError(f"--{field.replace('_', '-')}: {error['msg']}") from None


def serve(
    target: Path,
    config: ServeConfig,
    *,
    model: str | None = None,
    quant: str | None = None,
    request_log: Path | None = None,
) -> None:
    """Serve `target` (a project folder or a .gguf file) until SIGINT or SIGTERM; answers
    in flight are finished first, for up to `config.shutdown_timeout` seconds.

    :param request_log: log requests to this file; default: a project's
        `out/serve/requests.jsonl` when `config.request_log` is on, else no log.
    :raises InputError: if the target is not servable.
    :raises ModelNotFoundError: if a model spec resolves to nothing.
    """
    target = Path(target)
    if request_log is None and config.request_log and target.is_dir():
        request_log = target / REQUEST_LOG
    served = open_served_model(target, config, model=model, quant=quant)
    try:
        run_app(create_app(served, config, request_log=request_log), config)
    finally:
        served.backend.close()


def run_app(
    app: Any,
    config: ServeConfig,
    *,
    max_connections: int = MAX_CONNECTIONS,
    head_timeout: float = HEAD_TIMEOUT,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve an ASGI app with uvicorn on `config.host`/`config.port` until SIGINT or
    SIGTERM, then return (exit status 0) once the answers in flight are finished.

    :param max_connections: open connections past which a new one gets 503 and is closed.
    :param head_timeout: seconds a connection may take to send a request head.
    :param sockets: listen on these bound sockets instead of host and port.
    """
    import uvicorn

    from minime.serve.protocol import guarded_protocol

    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=guarded_protocol(max_connections, head_timeout),
        ws="none",
        lifespan="on",
        # The app reads X-Forwarded-For itself, trusting only `forwarded_proxies` hops:
        # uvicorn's own proxy_headers would trust it from loopback, whatever the setting.
        proxy_headers=False,
        log_level="info",
        server_header=False,
        timeout_graceful_shutdown=config.shutdown_timeout,
    )
    _graceful_server(uv_config).run(sockets=sockets)


def _graceful_server(config: Any) -> Any:
    """uvicorn's Server, except that a graceful stop on SIGTERM returns rather than
    re-raising the signal (uvicorn 0.54 does, so the process would exit 143, which
    container runtimes report as a failure)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)
