"""Stop-string handling for streamed text.

Backends that generate token by token must not emit text that may turn out to be the
start of a stop string; llama-cpp-python does this only inside its own completion loop,
which we cannot use because it hides the logits we keep.
"""

from __future__ import annotations


class StopStringFilter:
    """Holds back the tail of a stream that could still become a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add generated text; return what is safe to emit now."""
        self._pending += text
        found = [i for i in (self._pending.find(stop) for stop in self._stops) if i != -1]
        if found:
            self.stopped = True
            emit, self._pending = self._pending[: min(found)], ""
            return emit
        hold = max((_overlap(self._pending, stop) for stop in self._stops), default=0)
        emit = self._pending[: len(self._pending) - hold]
        self._pending = self._pending[len(emit) :]
        return emit

    def flush(self) -> str:
        """Return what was held back, at the end of generation."""
        emit, self._pending = self._pending, ""
        return emit


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-size:]):
            return size
    return 0
