"""Progress that a person can follow, on a terminal or piped to a file.

On a terminal a rich progress bar shows it (and vanishes when done). Piped to a file, as in
CI or under `nohup`, a bar would print nothing, so plain lines take its place: one when the
work starts, a heartbeat with the counts at least every `HEARTBEAT_SECONDS` (also while
one slow task runs), and one when it ends. Lines go to stderr; stdout keeps the results.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Longest silence, in seconds, of a piped run while work is going on.
HEARTBEAT_SECONDS = 30.0

#: Whether a spinner is showing: rich shows one live display at a time, so a wait inside
#: another (assembling a model while it loads) says its line instead.
_spinning = False


def say(message: str) -> None:
    """Print one plain progress line to stderr, flushed (a piped run shows it at once)."""
    print(message, file=sys.stderr, flush=True)


def is_terminal() -> bool:
    """Whether stderr is a terminal (bars), not a pipe or file (plain lines)."""
    from rich.console import Console

    return Console(stderr=True).is_terminal


def elapsed(seconds: float) -> str:
    """`42 s`, `3.5 min` or `1.2 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@contextmanager
def progress(description: str, total: int, completed: int = 0) -> Iterator[Callable[[], None]]:
    """Show progress through `total` items, `completed` of them done before; yields the
    function to call after each item."""
    if is_terminal():
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total, completed=completed)
            yield lambda: bar.advance(task)
        return
    with heartbeat(description, total, completed) as advance:
        yield advance


@contextmanager
def heartbeat(description: str, total: int, completed: int = 0) -> Iterator[Callable[[], None]]:
    """The piped form of `progress`: a start line, counts every HEARTBEAT_SECONDS, an end
    line."""
    done = completed
    start = time.monotonic()
    stop = threading.Event()
    todo = total - completed
    before = f" ({completed} done before)" if completed else ""
    if todo <= 0:
        yield lambda: None
        return
    say(f"{description}: {todo} to do{before}")

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            say(f"{description}: {done}/{total} done, {elapsed(time.monotonic() - start)}")

    def advance() -> None:
        nonlocal done
        done += 1

    thread = threading.Thread(target=beat, name="minime-heartbeat", daemon=True)
    thread.start()
    try:
        yield advance
    finally:
        stop.set()
        thread.join()
        ended = "done" if done >= total else "stopped"
        say(f"{description}: {ended}, {done}/{total} in {elapsed(time.monotonic() - start)}")


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """Say what a long wait is for: a spinner on a terminal, a line (and a heartbeat every
    HEARTBEAT_SECONDS) when piped; then how long it took."""
    global _spinning
    start = time.monotonic()
    if is_terminal() and not _spinning:
        from rich.console import Console

        _spinning = True
        try:
            with Console(stderr=True).status(what + " ..."):
                yield
        finally:
            _spinning = False
        return
    say(what + " ...")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            say(f"{what}: still going, {elapsed(time.monotonic() - start)}")

    thread = threading.Thread(target=beat, name="minime-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def piped_heartbeat(what: str) -> Iterator[None]:
    """When piped, say `what` and then that it is still going every HEARTBEAT_SECONDS; on a
    terminal nothing (the stage shows its own bar, and rich allows one live display)."""
    if is_terminal():
        yield
        return
    with waiting(what):
        yield
