"""What the SDK's local evaluation costs per call, and what counting adds to it.

    python -m tests.benchmarks.sdk_evaluation [--calls 200000] [--write-docs]

Compares ``Snapshot.evaluate`` alone, ``FlagClient.evaluate`` (evaluation plus the
per-thread count), the count alone, and the count a lock around a shared ``Counter``
would cost instead; then four threads evaluating at once, with the counts checked.
No server: the client is given its snapshot by a fake controller.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

from flags.model import EvaluationContext
from flags.sdk.client import SNAPSHOT_PATH, FlagClient
from flags.sdk.reporting import Recorder
from flags.sdk.transport import Reply
from tests.benchmarks.detection_latency import machine
from tests.benchmarks.docs_section import markers, replace_section

SNAPSHOT = {
    "revision": 1,
    "flags": {
        "memory-layer": {
            "key": "memory-layer",
            "type": "boolean",
            "variants": {"off": False, "on": True},
            "default_variant": "off",
            "enabled": True,
            "salt": None,
            "description": "",
            "rules": [],
            "version": 1,
            "rollout": {
                "rollout": "memory-layer",
                "status": "running",
                "stage": "canary",
                "step": 1,
                "percent": 5,
                "regions": [],
                "shadow": True,
                "on_variant": "on",
                "off_variant": "off",
            },
        }
    },
}


class OneSnapshot:
    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        if path == SNAPSHOT_PATH:
            return Reply(200, json.dumps(SNAPSHOT).encode(), {"etag": '"r1"'})
        return Reply(202, b"{}")

    def close(self) -> None:
        pass


def per_call_ns(calls: int, step: Callable[[int], object], repeats: int = 5) -> float:
    """The best of ``repeats`` runs: the machine is shared, and noise only adds time."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for i in range(calls):
            step(i)
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    calls = args.calls
    client = FlagClient("http://bench.invalid", "t", transport=OneSnapshot(), start=False)
    client.poll()
    snapshot = client.snapshot
    assert snapshot is not None
    contexts = [EvaluationContext(f"user-{i}") for i in range(1000)]
    recorder = Recorder(clock=time.time)
    lock = threading.Lock()
    shared: Counter[tuple[str, str]] = Counter()

    def locked_count(_i: int) -> None:
        with lock:
            shared[("memory-layer", "on")] += 1

    rows = {
        "loop and call overhead": per_call_ns(calls, lambda i: contexts[i % 1000]),
        "Snapshot.evaluate": per_call_ns(
            calls, lambda i: snapshot.evaluate("memory-layer", contexts[i % 1000])
        ),
        "FlagClient.evaluate (evaluate + count)": per_call_ns(
            calls, lambda i: client.evaluate("memory-layer", contexts[i % 1000])
        ),
        "per-thread count alone": per_call_ns(
            calls, lambda i: recorder.record("memory-layer", "on", None)
        ),
        "lock + shared Counter alone": per_call_ns(calls, locked_count),
    }
    threads_n, each = 4, calls // 4
    threaded_rows = {}
    for counting in ("per-thread tables", "lock + shared Counter"):
        threaded = FlagClient("http://bench.invalid", "t", transport=OneSnapshot(), start=False)
        threaded.poll()
        if counting != "per-thread tables":
            threaded.recorder.record = lambda flag, variant, key: locked_count(0)  # type: ignore[method-assign]
        elapsed = run_threads(threaded, contexts, threads_n, each)
        threaded_rows[counting] = elapsed / (threads_n * each) * 1e9
    counted = counted_last(contexts, threads_n, each)
    text = section(calls, rows, threads_n, each, threaded_rows, counted)
    print(text)
    if args.write_docs:
        replace_section("sdk-counting", text)


def section(
    calls: int,
    rows: Mapping[str, float],
    threads_n: int,
    each: int,
    threaded: Mapping[str, float],
    counted: int,
) -> str:
    m = machine()
    start, end = markers("sdk-counting")
    return "\n".join(
        [
            start,
            "## SDK: what counting costs",
            "",
            f"Measured {m['date']} with `python -m tests.benchmarks.sdk_evaluation "
            f"--write-docs` on {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}: "
            f"{calls:,} calls, the best of 5 runs (the loop's own cost is in every figure).",
            "",
            "| call | µs per call |",
            "|---|---:|",
            *(f"| {name} | {ns / 1000:.3f} |" for name, ns in rows.items()),
            "",
            f"{threads_n} threads x {each:,} evaluations at once, overall µs per call:",
            "",
            "| counting | µs per call |",
            "|---|---:|",
            *(f"| {name} | {ns / 1000:.3f} |" for name, ns in threaded.items()),
            "",
            f"Per-thread tables counted {counted:,} of {threads_n * each:,} evaluations.",
            end,
        ]
    )


def run_threads(
    client: FlagClient, contexts: list[EvaluationContext], threads_n: int, each: int
) -> float:
    def work() -> None:
        for i in range(each):
            client.evaluate("memory-layer", contexts[i % 1000])

    workers = [threading.Thread(target=work) for _ in range(threads_n)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start


def counted_last(contexts: list[EvaluationContext], threads_n: int, each: int) -> int:
    client = FlagClient("http://bench.invalid", "t", transport=OneSnapshot(), start=False)
    client.poll()
    run_threads(client, contexts, threads_n, each)
    return sum(client.recorder.take().counts.values())


if __name__ == "__main__":
    main()
