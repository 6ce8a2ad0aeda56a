"""A persona project: a folder with `profile.md`, optional real prompts and `minime.yaml`.

Every artifact goes under `out/<stage>/` inside that folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from minime.config import CONFIG_FILE, MinimeConfig, load_config
from minime.errors import InputError
from minime.fileio import write_text_atomic

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
        if not profile_path.is_file():
            raise InputError(
                f'{profile_path}: profile not found (field "profile" in {CONFIG_FILE})'
            )
        profile = profile_path.read_text(encoding="utf-8").strip()
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

    def out_dir(self, stage: str) -> Path:
        """The output folder of one stage (created on demand)."""
        path = self.root / "out" / stage
        path.mkdir(parents=True, exist_ok=True)
        return path


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
# minime project settings; every key is optional (see `minime init --help`).
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
