"""A persona project: a folder with `profile.md`, optional real prompts and `minime.yaml`.

Every artifact goes under `out/<stage>/` inside that folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from minime.config import CONFIG_FILE, MinimeConfig, load_config
from minime.errors import ConfigError, InputError, MinimeError
from minime.fileio import read_text, write_text_atomic
from minime.layout import stage_dir
from minime.registry import ResolvedModel, check_reachable, resolve

PROMPT_FILE_NAMES = ("prompts.txt", "prompts.jsonl", "prompts.csv")


@dataclass(frozen=True)
class Project:
    """A loaded persona project."""

    root: Path
    config: MinimeConfig
    profile: str

    @classmethod
    def open(cls, root: Path) -> Project:
        """Load the project in `root`.

        :raises InputError: if the folder or its profile is missing or empty.
        :raises ConfigError: if `minime.yaml` is invalid.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such project folder (create one with `minime init`)")
        config = load_config(root / CONFIG_FILE)
        profile_path = root / config.profile
        if not profile_path.exists():
            raise InputError(
                f'{profile_path}: profile not found (field "profile" in {CONFIG_FILE})'
            )
        profile = read_text(profile_path).strip()
        if not profile:
            raise InputError(f"{profile_path}: the profile is empty")
        return cls(root=root, config=config, profile=profile)

    @property
    def name(self) -> str:
        """The person's name: from the config, else the profile's first heading."""
        if self.config.name:
            return self.config.name
        heading = re.search(r"^#\s+(.+?)\s*#*\s*$", self.profile, flags=re.MULTILINE)
        return heading.group(1) if heading else "this person"

    @property
    def prompt_files(self) -> list[Path]:
        """Files of real visitor prompts: those configured, else the conventional names."""
        if self.config.prompts:
            return [self.root / name for name in self.config.prompts]
        return [self.root / name for name in PROMPT_FILE_NAMES if (self.root / name).is_file()]

    @property
    def questions_path(self) -> Path:
        """The persona's own evaluation questions (`eval.questions`, which may not exist)."""
        return self.root / self.config.eval.questions

    @property
    def config_path(self) -> Path:
        """The project's `minime.yaml` (which may not exist: defaults)."""
        return self.root / CONFIG_FILE

    def setting_line(self, key: str) -> int | None:
        """The line of a dotted setting (`models.student`) in minime.yaml; None when the file
        does not set it (its default is in force)."""
        return setting_line(self.config_path, key)

    def where(self, key: str) -> str:
        """`minime.yaml:LINE: KEY` for messages; `KEY (default)` when the file does not set it."""
        line = self.setting_line(key)
        if line is None:
            return f"{self.config_path}: {key} (default)"
        return f"{self.config_path}:{line}: {key}"

    def model_specs(self, roles: Iterable[str]) -> dict[str, str]:
        """The model spec of each role, by its setting's key: `chat`, `teacher`, `student`,
        `embedder`, `generators` (one key per entry, `models.generators.0`), `eval.judge`
        when set, and `eval.generator` (default: the first generator) when eval writes
        questions."""
        models, specs = self.config.models, {}
        for role in roles:
            if role == "generators":
                for i, spec in enumerate(models.generators):
                    specs[f"models.generators.{i}"] = spec
            elif role == "eval.judge":
                if self.config.eval.judge:
                    specs[role] = self.config.eval.judge
            elif role == "eval.generator":  # it writes new questions, when any are asked for
                evaluation = self.config.eval
                if evaluation.generator:
                    specs[role] = evaluation.generator
                elif evaluation.generated_facts or evaluation.generated_per_category:
                    specs["models.generators.0"] = models.generators[0]
            else:
                specs[f"models.{role}"] = getattr(models, role)
        return specs

    def resolve_models(self, roles: Iterable[str]) -> dict[str, ResolvedModel]:
        """Resolve the model spec of each role before any work starts, so that a typo is
        found in seconds, not after an hour-long stage.

        :raises ConfigError: for the first spec that resolves to nothing, or an `openai:`
            server that does not accept a connection, as `minime.yaml:LINE: models.ROLE:
            SPEC: why` (with "did you mean" for a near miss).
        """
        resolved = {}
        for key, spec in self.model_specs(roles).items():
            try:
                resolved[key] = resolve(spec)
                check_reachable(resolved[key])
            except MinimeError as exc:
                raise ConfigError(f"{self.where(key)}: {exc}") from None
        return resolved

    def template_problem(self) -> str | None:
        """What still needs editing when the project is `minime init`'s starter as written;
        None when the profile is the person's own."""
        if STARTER_MARKER in self.profile:
            line = 1 + self.profile[: self.profile.index(STARTER_MARKER)].count("\n")
            return (
                f"{self.root / self.config.profile}:{line}: the profile is still the starter "
                "text of `minime init`; replace it with what visitors may ask about the person "
                "(work, projects, contact, what not to discuss)"
            )
        if self.name == STARTER_NAME:
            return (
                f"{self.where('name')}: the name is still {STARTER_NAME!r}; set it (and the "
                "profile's first heading) to the person's name"
            )
        return None

    def require_edited(self) -> None:
        """:raises InputError: if the project is the unedited starter (see template_problem)."""
        problem = self.template_problem()
        if problem:
            raise InputError(problem)

    def out_dir(self, stage: str) -> Path:
        """The output folder of one stage (created on demand)."""
        path = stage_dir(self.root, stage)
        path.mkdir(parents=True, exist_ok=True)
        return path


def setting_line(path: Path, key: str) -> int | None:
    """The 1-based line of a dotted setting (list entries by index) in a YAML file; None when
    the file, or the setting in it, is missing."""
    try:
        node = yaml.compose(read_text(path, ConfigError)) if path.is_file() else None
    except (yaml.YAMLError, MinimeError):
        return None
    for part in key.split("."):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                return None
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            return None
    return line if node is not None else None


#: A sentence of the starter profile: while it is there the profile was not written.
STARTER_MARKER = "Write here, in your own words,"
STARTER_NAME = "Your Name"

STARTER_PROFILE = """\
# {name}

Write here, in your own words, what a visitor may ask about: your work, projects,
skills, education, interests, and how to contact you. Any headings work.

## Work

## Projects

## Contact

## What I don't discuss
Say here what the assistant should decline (salary, family, health, ...).
"""

STARTER_CONFIG = """\
# minime project settings; every key is optional. `minime config DIR` lists them all,
# with their defaults, the values in force and what each does.
name: {name}
profile: profile.md
models:
  chat: qwen2.5-coder-1.5b-instruct     # answers with the profile in its prompt
  teacher: qwen2.5-coder-1.5b-instruct  # writes the training answers
  student: smollm2-135m-instruct        # the tiny model that is distilled
chat:
  temperature: 0.2
  max_tokens: 320
"""

STARTER_PROMPTS = """\
What do you do for a living?
What are you working on right now?
How can I contact you?
"""


def init_project(root: Path, name: str) -> list[Path]:
    """Write a starter project in `root`, leaving existing files untouched.

    :returns: the files written.
    """
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in (
        ("profile.md", STARTER_PROFILE),
        (CONFIG_FILE, STARTER_CONFIG),
        ("prompts.txt", STARTER_PROMPTS),
    ):
        path = root / file_name
        if not path.exists():
            write_text_atomic(path, text.format(name=name))
            written.append(path)
    return written
