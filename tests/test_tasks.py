"""The resumable task runner (minime.tasks)."""

import threading
import time

from minime.jsonl import ResumableJsonl
from minime.tasks import run_tasks


def test_work_at_risk_of_a_kill_never_exceeds_the_workers(tmp_path, monkeypatch):
    """Tasks started but not yet on disk stay within `workers` even when writing is slow."""
    started, written, worst, lock = [0], [0], [0], threading.Lock()
    append = ResumableJsonl.append

    def slow_append(self, record):
        time.sleep(0.02)  # a writer slower than the tasks, as on a starved machine
        append(self, record)
        written[0] += 1

    def task():
        with lock:
            started[0] += 1
            worst[0] = max(worst[0], started[0] - written[0])
        return {}

    monkeypatch.setattr(ResumableJsonl, "append", slow_append)
    results = run_tasks(tmp_path / "t.jsonl", [(str(i), task) for i in range(30)], "t", workers=4)
    assert len(results) == written[0] == 30
    assert worst[0] <= 4


def test_a_rerun_runs_only_what_is_not_on_disk(tmp_path):
    calls = []

    def task(i):
        calls.append(i)
        return {"value": i}

    path = tmp_path / "t.jsonl"
    run_tasks(path, [(str(i), lambda i=i: task(i)) for i in range(3)], "t", workers=2)
    results = run_tasks(path, [(str(i), lambda i=i: task(i)) for i in range(5)], "t", workers=2)
    assert sorted(calls) == [0, 1, 2, 3, 4]
    assert [results[str(i)]["value"] for i in range(5)] == list(range(5))
