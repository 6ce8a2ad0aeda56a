"""Resumable work lists: each task's result is on disk as soon as it is done.

The slow steps (LLM generation, teacher answers) are lists of independent tasks. Results
go to `<name>.partial` through ResumableJsonl; a rerun after a crash, Ctrl-C or SIGKILL
skips the tasks already there, so none is lost and only the tasks in flight at the kill
(one, or `workers`) run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from minime.jsonl import ResumableJsonl
from minime.progress import progress


def run_tasks(
    path: Path,
    tasks: Iterable[tuple[str, Callable[[], dict[str, Any]]]],
    description: str,
    workers: int = 1,
) -> dict[str, dict[str, Any]]:
    """Run each (task id, function) whose id is not yet in `path`; return results by task id.

    Each function returns a JSON-able dict; the task id is stored under "id". Results of
    earlier runs (finished or interrupted) are reused by id, so a task id must change
    whenever what the task depends on changes (see `task_key`); results of tasks no longer
    asked for are left out.

    :param workers: tasks run at once, for backends that serve concurrent requests (HTTP).
    """
    tasks = list(tasks)
    out = ResumableJsonl(path)
    try:
        todo = [(task_id, fn) for task_id, fn in tasks if task_id not in out.done]
        # A bar on a terminal; piped, plain lines with a heartbeat (minime.progress).
        with progress(description, total=len(tasks), completed=len(tasks) - len(todo)) as advance:
            # Results are written here, in this thread, as each task finishes.
            for task_id, result in _results(todo, workers):
                out.append({"id": task_id, **result})
                advance()
    except BaseException:
        out.close()
        raise
    done = out.finish()
    return {task_id: done[task_id] for task_id, _ in tasks}


def _results(todo: list[tuple[str, Callable]], workers: int) -> Iterator[tuple[str, dict]]:
    """Each task's result as it finishes, at most `workers` tasks running or finished but not
    yet handed back at any time: a task starts only once an earlier result has been taken
    (and written), so a kill loses at most `workers` tasks' work, however slow the writer."""
    if workers <= 1:
        for task_id, fn in todo:
            yield task_id, fn()
        return
    queue = iter(todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running = {}
        try:
            while True:
                for task_id, fn in queue:
                    running[pool.submit(fn)] = task_id
                    if len(running) >= workers:
                        break
                if not running:
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield running.pop(future), future.result()
        finally:
            for future in running:
                future.cancel()


def worker_count(concurrency: int, backends: Iterable[Any]) -> int:
    """Tasks to run at once: in-process models take turns (they hold a lock), so 1, unless
    a backend serves concurrent requests (HTTP); then `concurrency`."""
    return concurrency if any(backend.concurrent for backend in backends) else 1


def task_key(*parts: object) -> str:
    """A short id for a task from everything its result depends on."""
    text = "\0".join(str(part) for part in parts)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def work_file(dst: Path, name: str) -> Path:
    """The file beside a step's output that keeps its resumable work (`<stem>.<name>.jsonl`)."""
    return dst.with_name(f"{dst.stem}.{name}.jsonl")
