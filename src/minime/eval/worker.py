"""Answers the evaluation's questions with one contender, in a process of its own.

`python -m minime.eval.worker JOB.json RESULT.json`: a fresh process per contender makes
its peak resident memory the contender's own, not the sum of everything loaded before it.
Prints one line per answer, for the parent's progress bar.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from minime.backends import Delta, Message, SamplingParams, load_backend
from minime.errors import MinimeError
from minime.fileio import write_text_atomic


def run_job(job: dict) -> dict:
    """Load the contender, answer every question, and measure it.

    :param job: {"spec", "mode" ("plain", "guarded" or "profile"), "project" (folder,
        for the guarded and profile modes), "questions" (each a conversation: earlier
        turns, then the question),
        "params" (SamplingParams fields), "n_ctx", "n_threads"}.
    :returns: {"load_seconds", "answers": [{"text", "error", "seconds",
        "first_token_seconds", "tokens", "decode_seconds", "finish_reason"}],
        "peak_rss_bytes"}.
    """
    params = SamplingParams(**job["params"])
    started = time.perf_counter()
    if job["mode"] == "profile":
        from minime.chat import open_chat
        from minime.project import Project

        assistant = open_chat(Project.open(Path(job["project"])), job["spec"])
        assistant.params = params
        backend = assistant.backend

        def ask(messages: list[Message]) -> Iterator[Delta]:
            return assistant.stream(messages[-1]["content"], messages[:-1])
    else:
        backend = load_backend(job["spec"], n_ctx=job["n_ctx"], n_threads=job["n_threads"])
        if job["mode"] == "guarded":
            from minime.guard import GuardedBackend, OffTopicGuard
            from minime.project import Project

            guard = OffTopicGuard.for_project(Project.open(Path(job["project"])))
            backend = GuardedBackend(backend, guard)

        def ask(messages: list[Message]) -> Iterator[Delta]:
            return backend.stream(messages, params)

    load_seconds = time.perf_counter() - started
    answers = []
    with backend:
        for question in job["questions"]:
            answers.append(_answer(ask, question))
            print(len(answers), flush=True)
    return {"load_seconds": load_seconds, "answers": answers, "peak_rss_bytes": peak_rss_bytes()}


def peak_rss_bytes() -> int:
    """The peak resident memory of this process since it started.

    On Linux this is VmHWM: ru_maxrss there also counts the memory the parent had when it
    forked (the kernel carries it across exec), which would charge the evaluating
    process's own memory to every contender. Elsewhere ru_maxrss (bytes on macOS).
    """
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _answer(ask: Callable[[list[Message]], Iterator[Delta]], question: list[Message]) -> dict:
    """One answer with its timings; a backend error becomes the answer's error."""
    started = time.perf_counter()
    first = None
    parts, tokens, finish_reason, error = [], 0, None, None
    try:
        for delta in ask(question):
            if delta.text:
                first = first or time.perf_counter()
                parts.append(delta.text)
                tokens += max(1, len(delta.tokens))
            if delta.usage and delta.usage.completion_tokens:
                tokens = delta.usage.completion_tokens
            finish_reason = delta.finish_reason or finish_reason
    except MinimeError as exc:
        error = str(exc)
    end = time.perf_counter()
    return {
        "text": "".join(parts).strip(),
        "error": error,
        "seconds": end - started,
        "first_token_seconds": (first or end) - started,
        "tokens": tokens,
        "decode_seconds": end - first if first else 0.0,
        "finish_reason": finish_reason,
    }


def main(argv: list[str]) -> int:
    """Run the job in `argv[0]`, write the result to `argv[1]`; errors go to stderr."""
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        result = run_job(job)
    except MinimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_text_atomic(Path(argv[1]), json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
