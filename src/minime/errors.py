"""Errors that minime shows to its user as one line (any other exception is a bug)."""


class MinimeError(Exception):
    """An error the user can act on; the CLI prints it and exits with code 1."""


class ConfigError(MinimeError):
    """A configuration file, or a model spec in it, is wrong."""


class InputError(MinimeError):
    """A data file (profile, prompts, questions) is missing or malformed."""


class ModelNotFoundError(MinimeError):
    """A model spec names nothing that exists on this machine."""


class BackendError(MinimeError):
    """An LLM backend failed or answered with something that is not a valid response."""
