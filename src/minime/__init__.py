"""minime: turn what a person writes about themselves into a tiny chat assistant."""

from minime.backends import SamplingParams, load_backend
from minime.chat import PersonaChat, open_chat, system_prompt
from minime.config import MinimeConfig, load_config
from minime.errors import ConfigError, InputError, MinimeError
from minime.project import Project, init_project
from minime.registry import resolve

__all__ = [
    "ConfigError",
    "InputError",
    "MinimeConfig",
    "MinimeError",
    "PersonaChat",
    "Project",
    "SamplingParams",
    "init_project",
    "load_backend",
    "load_config",
    "open_chat",
    "resolve",
    "system_prompt",
]
