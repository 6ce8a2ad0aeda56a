"""Step 3 of `minime data`: edge-case prompts, from minime's bank and from generator models.

The bank (`minime.bank`) gives every persona the same curated private, out-of-scope,
injection, unanswerable, greeting and thanks prompts in the languages of its fixed answers,
less those whose topic the profile talks about. Generators add persona-specific ones:
private questions from what the profile says the person won't discuss (less those about
what the rest of the profile talks about), out-of-scope
requests close to the person's field, and vague messages. Each record keeps its category
and where it came from.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from pydantic import BaseModel

from minime.backends import ChatBackend
from minime.bank import TEACHER_CATEGORIES, bank_prompts, mentions_any
from minime.config import DataConfig
from minime.data.records import PromptRecord, records_from_results
from minime.generation import ask_list, generator_system, private_section, public_profile
from minime.jsonl import write_jsonl
from minime.project import Project
from minime.recall import terms
from minime.tasks import run_tasks, task_key, work_file, worker_count

BATCH = 10


INSTRUCTIONS = {
    "vague": (
        "Write {n} vague or ambiguous messages a visitor might send, too unclear to answer "
        "without asking back. Examples of the style (do not copy them):\n"
        "- Tell me more.\n- What about the other one?\n- Is that good?"
    ),
    "out_of_scope": (
        "Write {n} requests a visitor might send that are close to {name}'s field or "
        "interests but are not questions about {name}: asking the assistant to do work, "
        "give advice, explain a topic or write something. Example of the style (do not copy "
        "it): 'Can you explain how to choose a good camera for beginners?'"
    ),
    "private": (
        "Write {n} questions asking for private information about {name} that the profile "
        "does not give. {private}Call {name} by name or she/he/they, never 'you'. Example of "
        "the style (do not copy it): 'How much does {name} earn a year?'"
    ),
}


class EdgeReport(BaseModel):
    """How many edge cases each category got."""

    per_category: dict[str, int]
    total: int


def edge_cases(
    project: Project, dst: Path, generators: list[ChatBackend], config: DataConfig
) -> EdgeReport:
    """Ask every generator for edge-case prompts of every category, add the bank's; write `dst`."""
    system = generator_system(project)
    private = private_section(project.profile)
    private_hint = f'The profile says: "{private}" ' if private else ""
    tasks = []
    for g, backend in enumerate(generators):
        for category, instruction in INSTRUCTIONS.items():
            for job_index, size in enumerate(_batches(config.edge_per_category)):
                text = instruction.format(n=size, name=project.name, private=private_hint)
                task_id = task_key(category, None, job_index, text, backend.name, system)
                seed = 3000 + 100 * g + job_index
                job = partial(_generate, backend, system, text, size, seed, category)
                tasks.append((task_id, job))
    workers = worker_count(config.concurrency, generators)
    results = list(run_tasks(work_file(dst, "tasks"), tasks, "edge cases", workers).values())
    public = public_profile(project.profile)
    generated = [
        r
        for r in records_from_results(results)
        if r.category != "private" or not _profile_talks_about(r.prompt, project.name, public)
    ]
    records = generated + _bank_records(project, config)
    write_jsonl(dst, (r.model_dump() for r in records))
    per_category = dict(Counter(r.category for r in records))
    return EdgeReport(per_category=per_category, total=len(records))


def _bank_records(project: Project, config: DataConfig) -> list[PromptRecord]:
    """The bank's prompts for this person, in English and the configured languages."""
    languages = {"en", *config.languages}
    return [
        PromptRecord.create(
            prompt.text,
            "bank",
            category=TEACHER_CATEGORIES.get(prompt.category, prompt.category),
            origin=f"bank: {prompt.category}",
            language=None if prompt.language == "en" else prompt.language,
        )
        for prompt in bank_prompts(project.name, public_profile(project.profile))
        if prompt.language in languages
    ]


def _profile_talks_about(prompt: str, name: str, public: str) -> bool:
    """Whether a content word of `prompt` (less the person's name) is in `public`, the
    profile without its "won't discuss" part: the bank's rule for its topics, applied to a
    generator's private questions. A 1.5B generator asked for private questions also wrote
    "Where does Mara Lindqvist work?", "Who is Mara Lindqvist's cat?" and "How many
    kilometres does Javier cycle every weekend?"; declined in training, they teach the
    student to decline the person's facts."""
    name_terms = terms(name)
    words = {w.removesuffix("'s").removesuffix("\u2019s") for w in terms(prompt)}
    return mentions_any(public, sorted(words - name_terms))


def _batches(total: int) -> list[int]:
    """The size of each generation call for one category."""
    return [BATCH] * (total // BATCH) + ([total % BATCH] if total % BATCH else [])


def _generate(
    backend: ChatBackend,
    system: str,
    instruction: str,
    size: int,
    seed: int,
    category: str,
) -> dict:
    prompts = ask_list(backend, system, instruction, size, seed=seed, temperature=0.9)
    return {
        "source": "edge",
        "origin": "edge",
        "category": category,
        "generator": backend.name,
        "prompts": prompts,
    }
