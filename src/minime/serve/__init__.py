"""`minime serve` and `minime deploy`: the assistant on a website.

`serve` runs an OpenAI-compatible server (streaming chat completions, a health check,
an embeddable chat widget and a demo page) around one model instance; `deploy` writes
the container and Cloud Run files that run the same command.
"""

from minime.serve.app import create_app
from minime.serve.deploy import DeployReport, deploy
from minime.serve.model import ServedModel, open_served_model
from minime.serve.run import serve, serve_config

__all__ = [
    "DeployReport",
    "ServedModel",
    "create_app",
    "deploy",
    "open_served_model",
    "serve",
    "serve_config",
]
