"""The SDK against a fake controller (a ``Transport`` that answers in memory): ETags,
fallbacks, bootstrap and cache files, batched reports, and thread safety."""

from __future__ import annotations

import json
import logging
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from flags.model import ErrorCode, EvaluationContext, Reason
from flags.sdk.client import (
    ClientEvent,
    FlagClient,
    Source,
)
from flags.sdk.reporting import hash_targeting_key
from tests.unit.fake_controller import FakeController, color, flag, snapshot_body

USER = EvaluationContext("user-0001")


@pytest.fixture
def controller() -> FakeController:
    c = FakeController()
    c.publish(1, color("blue"), flag("dark-mode", "boolean", {"off": False, "on": True}, "on"))
    return c


def client_for(controller: FakeController, **options: Any) -> FlagClient:
    options.setdefault("start", False)
    return FlagClient("http://controller.invalid", "sdk-token", transport=controller, **options)


def counts_of(reports: list[dict]) -> dict[tuple[str, str | None], int]:
    total: dict[tuple[str, str | None], int] = {}
    for report in reports:
        for item in report["counts"]:
            key = (item["flag"], item["variant"])
            total[key] = total.get(key, 0) + item["count"]
    return total


# -- polling ----------------------------------------------------------------------------


def test_first_poll_loads_the_snapshot_and_later_polls_send_the_etag(
    controller: FakeController,
) -> None:
    client = client_for(controller)
    assert client.poll()
    first = client.snapshot
    assert client.evaluate("color", USER).value == "blue"
    assert client.poll()
    assert client.snapshot is first  # 304: nothing re-parsed, nothing swapped
    sent = [headers.get("If-None-Match") for _, path, headers in controller.requests]
    assert sent == [None, '"r1"']
    assert client.status.source is Source.SERVER
    assert client.status.revision == 1


def test_a_changed_snapshot_is_swapped_in_and_announced(controller: FakeController) -> None:
    client = client_for(controller)
    events: list[tuple[ClientEvent, frozenset[str]]] = []
    client.add_listener(lambda event, keys: events.append((event, keys)))
    client.poll()
    controller.publish(2, color("green"), flag("dark-mode", "boolean", {"off": False}, "off"))
    client.poll()
    assert client.evaluate("color", USER).value == "green"
    assert client.evaluate("dark-mode", USER).value is False
    assert events == [
        (ClientEvent.READY, frozenset()),
        (ClientEvent.CHANGED, frozenset({"color", "dark-mode"})),
    ]


def test_unreachable_controller_keeps_the_last_snapshot_and_logs_once(
    controller: FakeController, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(controller)
    events: list[ClientEvent] = []
    client.add_listener(lambda event, _keys: events.append(event))
    client.poll()
    controller.down = True
    with caplog.at_level(logging.WARNING, logger="flags.sdk.client"):
        assert not any([client.poll(), client.poll(), client.poll()])
    assert client.evaluate("color", USER).value == "blue"
    assert (client.status.stale, client.status.consecutive_failures) == (True, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "answering from revision 1" in warnings[0].getMessage()
    controller.down = False
    assert client.poll()
    assert not client.status.stale
    assert events == [ClientEvent.READY, ClientEvent.STALE, ClientEvent.RECOVERED]


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_an_error_status_is_a_failed_poll_not_an_empty_snapshot(
    controller: FakeController, status: int
) -> None:
    client = client_for(controller)
    client.poll()
    controller.status = status
    assert not client.poll()
    assert client.evaluate("color", USER).value == "blue"


def test_an_unreadable_snapshot_keeps_the_previous_one(controller: FakeController) -> None:
    client = client_for(controller)
    client.poll()
    controller.body = {"revision": "two", "flags": []}
    assert not client.poll()
    assert client.evaluate("color", USER).value == "blue"


def test_a_newer_servers_snapshot_is_read_leniently(controller: FakeController) -> None:
    future_rule = {
        "when": [{"attribute": "v", "op": "semver_gt", "values": ["2.0.0"]}],
        "variant": "on",
    }
    controller.body = {
        "revision": 7,
        "served_by": "replica-3",
        "flags": {
            "color": {**color("blue"), "owner": "team-ui", "rules": [], "ttl": 30},
            "future": flag("future", "boolean", {"on": True}, "on", rules=[future_rule]),
        },
    }
    client = client_for(controller)
    assert client.poll()
    assert client.evaluate("color", USER).value == "blue"
    unknown = client.evaluate("future", USER)
    assert (unknown.reason, unknown.error_code) == (Reason.ERROR, ErrorCode.FLAG_NOT_FOUND)


def test_poll_delays_jitter_under_the_interval_and_back_off_on_failure(
    controller: FakeController,
) -> None:
    client = client_for(controller, poll_interval=30.0, rng=random.Random(7))
    ok = [client._next_poll_delay(True) for _ in range(200)]
    assert all(24.0 <= d <= 30.0 for d in ok) and len(set(ok)) > 100
    controller.down = True
    ceilings = []
    for _ in range(10):
        client.poll()
        ceilings.append(max(client._next_poll_delay(False) for _ in range(50)))
    assert ceilings[0] < 1.5 < ceilings[3]  # grows from a quick retry ...
    assert all(c <= 30.0 for c in ceilings)  # ... never past the poll interval
    assert ceilings[-1] > 20.0


# -- fallbacks ---------------------------------------------------------------------------


def test_without_any_snapshot_answers_are_the_callers_defaults(
    controller: FakeController,
) -> None:
    controller.down = True
    client = client_for(controller, defaults={"color": "grey"})
    client.poll()
    answer = client.evaluate("color", USER)
    assert (answer.value, answer.variant, answer.reason) == ("grey", None, Reason.ERROR)
    assert answer.error_code is ErrorCode.PROVIDER_NOT_READY
    assert not client.ready
    assert client.string_value("color", "red", USER) == "red"
    assert client.boolean_value("dark-mode", True, USER) is True
    assert not client.wait_until_ready(0.05)


def test_bootstrap_file_answers_while_the_controller_is_down(
    controller: FakeController, tmp_path: Path
) -> None:
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text(json.dumps(snapshot_body(5, color("green"))))
    controller.down = True
    client = client_for(controller, bootstrap_path=bootstrap)
    assert client.ready and client.status.source is Source.BOOTSTRAP
    client.poll()
    assert client.wait_until_ready(0.05)
    assert client.string_value("color", "red", USER) == "green"
    controller.down = False
    client.poll()
    assert client.string_value("color", "red", USER) == "blue"
    assert client.status.source is Source.SERVER


def test_the_cache_file_is_written_and_preferred_over_the_bootstrap_at_next_start(
    controller: FakeController, tmp_path: Path
) -> None:
    cache = tmp_path / "cache" / "snapshot.json"
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(json.dumps(snapshot_body(1, color("green"))))
    first = client_for(controller, cache_path=cache, bootstrap_path=bootstrap)
    first.poll()
    assert json.loads(cache.read_text()) == controller.body
    assert [p.name for p in cache.parent.iterdir()] == ["snapshot.json"]  # no temp left
    controller.down = True
    second = client_for(controller, cache_path=cache, bootstrap_path=bootstrap)
    assert second.status.source is Source.CACHE
    assert second.string_value("color", "red", USER) == "blue"


def test_a_broken_bootstrap_file_is_ignored(
    controller: FakeController, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text('{"revision": 1, "flags": ')
    with caplog.at_level(logging.WARNING, logger="flags.sdk.client"):
        client = client_for(controller, bootstrap_path=bootstrap)
    assert not client.ready
    assert "ignoring bootstrap file" in caplog.text


# -- typed answers -------------------------------------------------------------------------


def test_typed_helpers_give_the_default_on_a_type_mismatch_or_an_unknown_flag(
    controller: FakeController,
) -> None:
    controller.publish(
        1,
        color("blue"),
        flag("limit", "number", {"low": 10, "high": 2.5}, "low"),
        flag("theme", "object", {"a": {"dense": True}}, "a"),
    )
    client = client_for(controller)
    client.poll()
    assert client.number_value("limit", 1, USER) == 10
    assert client.object_value("theme", {}, USER) == {"dense": True}
    assert client.boolean_value("color", False, USER) is False  # a string flag
    assert client.number_value("color", 3.5, USER) == 3.5
    assert client.string_value("missing", "fallback", USER) == "fallback"


def test_a_split_without_targeting_key_serves_the_flags_default(
    controller: FakeController,
) -> None:
    split = [{"when": [], "split": {"on": 50, "off": 50}}]
    controller.publish(1, flag("beta", "boolean", {"off": False, "on": True}, "off", rules=split))
    client = client_for(controller)
    client.poll()
    answer = client.evaluate("beta", EvaluationContext())
    assert (answer.value, answer.reason) == (False, Reason.DEFAULT)
    assert answer.error_code is ErrorCode.TARGETING_KEY_MISSING
    assert client.boolean_value("beta", True, EvaluationContext()) is False


# -- reports -----------------------------------------------------------------------------


def test_counts_are_sent_in_batches_and_each_evaluation_only_once(
    controller: FakeController,
) -> None:
    client = client_for(controller)
    client.poll()
    for _ in range(3):
        client.evaluate("color", USER)
    client.evaluate("missing", USER)
    assert client.flush()
    assert counts_of(controller.reports) == {("color", "blue"): 3, ("missing", None): 1}
    client.evaluate("color", USER)
    client.flush()
    assert controller.reports[-1]["counts"] == [{"flag": "color", "variant": "blue", "count": 1}]
    requests_before = len(controller.requests)
    assert client.flush()  # nothing new: nothing sent
    assert len(controller.requests) == requests_before


def test_a_failed_report_is_sent_again_and_a_refused_one_is_not(
    controller: FakeController,
) -> None:
    client = client_for(controller)
    client.poll()
    client.evaluate("color", USER)
    controller.down = True
    assert not client.flush()
    controller.down = False
    client.evaluate("color", USER)
    assert client.flush()
    assert counts_of(controller.reports) == {("color", "blue"): 2}
    client.evaluate("dark-mode", USER)
    controller.report_status = 422
    assert not client.flush()
    controller.report_status = 202
    client.flush()
    assert counts_of(controller.reports) == {("color", "blue"): 2}


def test_impressions_are_sampled_hashed_and_bounded(controller: FakeController) -> None:
    client = client_for(controller, impression_rate=1.0, max_impressions=3, clock=lambda: 1e9)
    client.poll()
    for i in range(5):
        client.evaluate("color", EvaluationContext(f"user-{i}"))
    client.evaluate("color", EvaluationContext())  # no key: counted, not an impression
    client.flush()
    (report,) = controller.reports
    assert report["impressions"] == [
        {"flag": "color", "variant": "blue", "key_hash": hash_targeting_key(f"user-{i}"), "at": 1e9}
        for i in range(3)
    ]
    assert "user-0" not in json.dumps(report)
    assert report["dropped"] == {"impressions": 2, "counts": 0}
    assert counts_of(controller.reports) == {("color", "blue"): 6}


def test_impressions_off_by_default(controller: FakeController) -> None:
    client = client_for(controller)
    client.poll()
    client.evaluate("color", USER)
    client.flush()
    assert controller.reports[0]["impressions"] == []


# -- threads -----------------------------------------------------------------------------


def test_concurrent_evaluation_during_swaps_sees_whole_snapshots_and_loses_no_count(
    controller: FakeController,
) -> None:
    """Each snapshot's two flags agree on its revision; a reader that saw half of one
    swap would see them disagree."""

    def publish(revision: int) -> None:
        tag = f"r{revision}"
        controller.publish(
            revision,
            flag("a", "string", {tag: tag}, tag),
            flag("b", "string", {tag: tag}, tag),
        )

    publish(1)
    client = client_for(controller)
    client.poll()
    stop = threading.Event()
    torn: list[tuple[str, str]] = []
    done = [0] * 4

    def reader(slot: int) -> None:
        while not stop.is_set():
            snapshot = client.snapshot
            assert snapshot is not None
            a = snapshot.evaluate("a", USER).value
            b = snapshot.evaluate("b", USER).value
            if a != b:
                torn.append((a, b))
            client.evaluate("a", USER)
            done[slot] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for revision in range(2, 200):
        publish(revision)
        client.poll()
    stop.set()
    for t in threads:
        t.join(10)
    assert not torn
    assert sum(done) > 0
    while client.recorder.take().counts:  # a batch holds at most 1,000 pairs
        client.flush()
    assert sum(counts_of(controller.reports).values()) == sum(done)


def test_the_background_thread_polls_and_close_sends_the_last_report(
    controller: FakeController,
) -> None:
    client = client_for(controller, start=True, poll_interval=0.05, flush_interval=60)
    assert client.wait_until_ready(5)
    controller.publish(2, color("green"))
    deadline = threading.Event()
    for _ in range(100):
        if client.string_value("color", "red", USER) == "green":
            break
        deadline.wait(0.05)
    assert client.string_value("color", "red", USER) == "green"
    client.close()
    assert counts_of(controller.reports)[("color", "green")] >= 1
    assert client.evaluate("color", USER).value == "green"  # still answers after close


def test_context_manager_closes(controller: FakeController) -> None:
    with client_for(controller) as client:
        client.poll()
        client.evaluate("color", USER)
    assert counts_of(controller.reports) == {("color", "blue"): 1}
