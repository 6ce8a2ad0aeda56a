"""Run the server: load the model, then listen (so the port opens only once it can answer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from minime.config import ServeConfig
from minime.data.collect import REQUEST_LOG
from minime.errors import ConfigError
from minime.project import Project


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
    import uvicorn

    from minime.serve.app import create_app
    from minime.serve.model import open_served_model

    target = Path(target)
    if request_log is None and config.request_log and target.is_dir():
        request_log = target / REQUEST_LOG
    served = open_served_model(target, config, model=model, quant=quant)
    try:
        app = create_app(served, config, request_log=request_log)
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            log_level="info",
            server_header=False,
            timeout_graceful_shutdown=config.shutdown_timeout,
        )
    finally:
        served.backend.close()
