"""The audit hash chain over plain dicts: what verification accepts and what it catches."""

from __future__ import annotations

import hashlib
from datetime import UTC
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from controller.audit_chain import (
    CONTENT_FIELDS,
    GENESIS,
    canonical_json,
    event_hash,
    seal,
    verify_chain,
)


def event(event_id: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "at": f"2026-11-01T12:00:{event_id % 60:02d}+00:00",
        "actor": "tester",
        "action": "start",
        "rollout": "r1",
        "flag": "r1",
        "from_status": "pending",
        "to_status": "running",
        "from_step": 0,
        "to_step": 0,
        "version": event_id,
        "reason": f"reason {event_id}",
        "details": {"force": False, "gates": {"error-rate": "ok"}},
        **fields,
    }


def chain(contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sealed: list[dict[str, Any]] = []
    prev = GENESIS
    for content in contents:
        sealed.append(seal(content, prev))
        prev = sealed[-1]["hash"]
    return sealed


def test_an_intact_chain_verifies() -> None:
    report = verify_chain(chain([event(i) for i in range(1, 6)]))
    assert (report.ok, report.checked, report.first_bad, report.problem) == (True, 5, None, None)


def test_an_empty_log_verifies() -> None:
    assert verify_chain([]).as_dict() == {
        "ok": True,
        "checked": 0,
        "first_bad": None,
        "problem": None,
    }


def test_the_hash_is_sha256_of_canonical_content_and_prev_hash() -> None:
    e = event(1, reason="café", details={"b": 1, "a": [1.5, None]})
    content = {name: e[name] for name in CONTENT_FIELDS}
    expected = hashlib.sha256((canonical_json(content) + GENESIS).encode()).hexdigest()
    assert event_hash(e, GENESIS) == expected
    assert '"details":{"a":[1.5,null],"b":1}' in canonical_json(content)
    assert "café" in canonical_json(content)  # not \\u escaped


def test_the_first_event_links_to_64_zeros() -> None:
    first = chain([event(1)])[0]
    assert first["prev_hash"] == "0" * 64
    assert len(first["hash"]) == 64


def test_nan_and_infinity_hash_as_text() -> None:
    as_float = event_hash(event(1, details={"v": float("nan"), "w": float("inf")}), GENESIS)
    as_text = event_hash(event(1, details={"v": "nan", "w": "inf"}), GENESIS)
    assert as_float == as_text


def test_an_edited_event_is_reported_at_its_id() -> None:
    events = chain([event(i) for i in range(1, 6)])
    events[2]["reason"] = "nothing to see"
    report = verify_chain(events)
    assert (report.ok, report.first_bad, report.checked) == (False, 3, 3)
    assert report.problem == "event 3 changed (hash mismatch)"


def test_a_removed_event_is_reported_at_the_next_one() -> None:
    events = chain([event(i) for i in range(1, 6)])
    del events[2]
    report = verify_chain(events)
    assert report.first_bad == 4
    assert report.problem == "event 4 does not follow event 2 (an event was removed or reordered)"


def test_removing_the_first_event_is_caught() -> None:
    report = verify_chain(chain([event(i) for i in range(1, 4)])[1:])
    assert report.first_bad == 2
    assert report.problem is not None and "does not follow the start of the log" in report.problem


def test_swapped_contents_are_caught_at_the_first_swapped_id() -> None:
    events = chain([event(i) for i in range(1, 6)])
    for name in set(events[0]) - {"id"}:
        events[1][name], events[3][name] = events[3][name], events[1][name]
    report = verify_chain(events)
    assert report.first_bad == 2 and not report.ok


def test_ids_must_only_increase() -> None:
    events = chain([event(i) for i in (1, 2, 2)])
    report = verify_chain(events)
    assert report.first_bad == 2 and report.checked == 3
    assert report.problem == "event 2 comes after event 2 (ids must only increase)"


# -- any single change anywhere is detected ----------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
optional_text = st.none() | st.text(max_size=20)
optional_int = st.none() | st.integers(0, 50)

contents = st.fixed_dictionaries(
    {
        "at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        "actor": st.text(max_size=20),
        "action": st.text(min_size=1, max_size=20),
        "rollout": optional_text,
        "flag": optional_text,
        "from_status": optional_text,
        "to_status": optional_text,
        "from_step": optional_int,
        "to_step": optional_int,
        "version": optional_int,
        "reason": st.text(max_size=40),
        "details": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    }
)


@st.composite
def chains(draw: st.DrawFn) -> list[dict[str, Any]]:
    bodies = draw(st.lists(contents, min_size=1, max_size=8))
    gaps = draw(st.lists(st.integers(1, 3), min_size=len(bodies), max_size=len(bodies)))
    ids, current = [], 0
    for gap in gaps:
        current += gap
        ids.append(current)
    return chain([{"id": i, **body} for i, body in zip(ids, bodies, strict=True)])


def different(old: Any) -> st.SearchStrategy[Any]:
    return (
        json_values
        | st.integers(-5, 10**6)
        | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
    ).filter(lambda new: canonical_json(new) != canonical_json(old))


@given(data=st.data(), events=chains())
def test_any_single_field_change_is_detected_at_that_event(
    data: st.DataObject, events: list[dict[str, Any]]
) -> None:
    assert verify_chain(events).ok
    index = data.draw(st.integers(0, len(events) - 1), label="event")
    name = data.draw(st.sampled_from(sorted(events[index])), label="field")
    new = data.draw(different(events[index][name]), label="new value")
    tampered = [dict(e) for e in events]
    tampered[index][name] = new
    report = verify_chain(tampered)
    assert not report.ok
    assert report.checked == index + 1
    if name != "id":
        assert report.first_bad == events[index]["id"]
