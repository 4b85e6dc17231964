"""``snapshot_from_dict(lenient=True)``: an older SDK reading a newer server's snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from flags.codec import FlagDefinitionError, snapshot_from_dict, snapshot_to_dict
from flags.model import EvaluationContext, Reason


def served_flag(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": "checkout",
        "type": "boolean",
        "variants": {"off": False, "on": True},
        "default_variant": "off",
        "enabled": True,
        "salt": None,
        "description": "",
        "rules": [
            {
                "when": [{"attribute": "region", "op": "in", "values": ["us-west-1"]}],
                "variant": "on",
            }
        ],
        "version": 3,
        "rollout": {
            "rollout": "checkout-v2",
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
    body.update(changes)
    return body


def with_new_fields_everywhere() -> dict[str, Any]:
    flag = served_flag()
    flag["owner"] = "team-payments"
    flag["rollout"]["started_at"] = "2031-01-01T00:00:00Z"
    flag["rules"][0]["id"] = "r-1"
    flag["rules"][0]["when"][0]["case_insensitive"] = True
    return {"revision": 9, "schema": 2, "flags": {"checkout": flag}}


def test_strict_mode_refuses_unknown_fields_at_every_level() -> None:
    with pytest.raises(FlagDefinitionError) as raised:
        snapshot_from_dict(with_new_fields_everywhere())
    assert sorted(path for path, _ in raised.value.problems) == [
        "flags.checkout.owner",
        "flags.checkout.rollout.started_at",
        "flags.checkout.rules[0].id",
        "flags.checkout.rules[0].when[0].case_insensitive",
        "schema",
    ]


def test_lenient_mode_ignores_them_and_evaluates_as_before() -> None:
    lenient = snapshot_from_dict(with_new_fields_everywhere(), lenient=True)
    plain = snapshot_from_dict({"revision": 9, "flags": {"checkout": served_flag()}})
    assert lenient == plain
    answer = lenient.evaluate("checkout", EvaluationContext("u", {"region": "us-west-1"}))
    assert (answer.value, answer.reason) == (True, Reason.TARGETING_MATCH)
    assert snapshot_to_dict(lenient) == snapshot_to_dict(plain)


def test_lenient_mode_leaves_out_only_the_flags_it_cannot_read() -> None:
    future = served_flag(key="future", type="semver")
    data = {"revision": 2, "flags": {"checkout": served_flag(), "future": future}}
    with pytest.raises(FlagDefinitionError):
        snapshot_from_dict(data)
    snapshot = snapshot_from_dict(data, lenient=True)
    assert set(snapshot.flags) == {"checkout"}


@pytest.mark.parametrize(
    "data", [[], {"flags": {}}, {"revision": -1, "flags": {}}, {"revision": 1, "flags": []}]
)
def test_lenient_mode_still_refuses_a_snapshot_without_its_own_shape(data: object) -> None:
    with pytest.raises(FlagDefinitionError):
        snapshot_from_dict(data, lenient=True)
