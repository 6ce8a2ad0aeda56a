"""Every setting of `minime.yaml` with its default, the value in force and where it comes from
(`minime config DIR`). The descriptions are the config models' `Field(description=...)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from minime.project import Project


@dataclass(frozen=True)
class Setting:
    """One leaf setting."""

    key: str
    value: Any
    default: Any
    description: str
    #: minime.yaml's line that sets it; None: the default is in force.
    line: int | None

    @property
    def changed(self) -> bool:
        """Whether the value in force differs from the default."""
        return self.value != self.default


def settings(project: Project) -> list[Setting]:
    """Every setting of the project's configuration, in the order of the config models."""
    found: list[Setting] = []
    _walk(project, project.config, type(project.config)(), "", found)
    return found


def _walk(project: Project, model: BaseModel, default: BaseModel, prefix: str, found: list) -> None:
    for name, field in type(model).model_fields.items():
        value, base = getattr(model, name), getattr(default, name)
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            _walk(project, value, base, key + ".", found)
            continue
        found.append(
            Setting(
                key=key,
                value=_plain(value),
                default=_plain(base),
                description=field.description or "",
                line=project.setting_line(key),
            )
        )


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def show(value: Any) -> str:
    """A value as it would be written in minime.yaml."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)
