"""Evaluation counts take no lock on the hot path, and still lose no count."""

from __future__ import annotations

import sys
import threading

from controller.api.evaluation import EvaluationCounts
from flags.model import Evaluation, Reason

ON = Evaluation("f", True, "on", Reason.SPLIT)
OFF = Evaluation("f", False, "off", Reason.SPLIT)
NOT_FOUND = Evaluation("g", None, None, Reason.ERROR)


def test_counts_by_flag_and_variant() -> None:
    counts = EvaluationCounts()
    for evaluation in (ON, ON, OFF, NOT_FOUND):
        counts.add(evaluation)
    counts.add_counts("f", "on", 40)
    counts.add_counts("h", None, 2)
    assert counts.by_flag() == {
        "f": {"off": 1, "on": 42},
        "g": {"(none)": 1},
        "h": {"(none)": 2},
    }


def test_no_count_is_lost_across_threads_while_being_read() -> None:
    counts = EvaluationCounts()
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    reads: list[int] = []

    def count() -> None:
        start.wait()
        for i in range(per_thread):
            counts.add(ON if i % 2 else OFF)
        counts.add_counts("f", "on", 5)

    def read() -> None:
        start.wait()
        # Reading while others count must neither fail nor ever go backwards.
        while not done.is_set():
            reads.append(sum(counts.by_flag().get("f", {}).values()))

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        workers = [threading.Thread(target=count) for _ in range(threads - 1)]
        reader = threading.Thread(target=read)
        for thread in [*workers, reader]:
            thread.start()
        start.wait()
        for thread in workers:
            thread.join()
        done.set()
        reader.join()
    finally:
        sys.setswitchinterval(previous)
    total = (threads - 1) * (per_thread + 5)
    assert sum(counts.by_flag()["f"].values()) == total
    assert counts.by_flag()["f"]["on"] == (threads - 1) * (per_thread // 2 + 5)
    assert reads == sorted(reads)
    assert reads and reads[-1] <= total


def test_counts_of_finished_threads_are_kept_and_folded() -> None:
    counts = EvaluationCounts()
    for _ in range(50):
        thread = threading.Thread(target=counts.add, args=(ON,))
        thread.start()
        thread.join()
    counts.add(OFF)  # this thread's first count: registering it folds the finished ones
    assert counts.by_flag() == {"f": {"off": 1, "on": 50}}
    assert len(counts._shards) == 1  # only the live thread keeps a dict of its own
