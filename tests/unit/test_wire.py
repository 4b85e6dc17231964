"""The wire format of an evaluation answer (flags/wire.py): what OFREP clients and the
native route's callers read, field for field and byte for byte."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.model import ErrorCode, Evaluation, Reason, RolloutServing
from flags.wire import (
    bulk_answer,
    evaluation_to_dict,
    evaluation_to_ofrep,
    flag_metadata,
    ofrep_error,
    to_json,
)

CANARY = RolloutServing(
    rollout="checkout-v2",
    status="running",
    stage="canary",
    step=1,
    percent=12.5,
    regions=frozenset({"us-west-1", "eu-west-1"}),
    shadow=False,
    on_variant="on",
    off_variant="off",
)
SPLIT = Evaluation("checkout", True, "on", Reason.SPLIT, rollout=CANARY, flag_version=3)


def test_an_ofrep_success_carries_value_variant_reason_and_metadata() -> None:
    assert evaluation_to_ofrep(SPLIT) == {
        "key": "checkout",
        "value": True,
        "reason": "SPLIT",
        "variant": "on",
        "metadata": {
            "flagVersion": 3,
            "rollout": "checkout-v2",
            "status": "running",
            "stage": "canary",
            "step": 1,
            "percent": 12.5,
            "shadow": False,
        },
    }


def test_a_missing_targeting_key_is_an_ofrep_success_with_the_safe_default() -> None:
    # OpenFeature swaps any answer with an error code for the caller's default; the
    # flag's default variant is the safe side, so OFREP sends it as a success.
    answer = Evaluation(
        "checkout", False, "off", Reason.DEFAULT, ErrorCode.TARGETING_KEY_MISSING, "no key"
    )
    body = evaluation_to_ofrep(answer)
    assert body["value"] is False
    assert body["reason"] == "DEFAULT"
    assert "errorCode" not in body


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            Evaluation("nope", None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND),
            {"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag not found"},
            id="unknown flag, no message",
        ),
        pytest.param(
            Evaluation("nope", None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND, "gone"),
            {"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "gone"},
            id="unknown flag, the message kept",
        ),
        pytest.param(
            Evaluation("k", None, None, Reason.ERROR, ErrorCode.PARSE_ERROR, "bad rule"),
            {"key": "k", "errorCode": "PARSE_ERROR", "errorDetails": "bad rule"},
            id="failed evaluation",
        ),
        pytest.param(
            Evaluation("k", None, None, Reason.ERROR),
            {"key": "k", "errorCode": "GENERAL", "errorDetails": "evaluation failed"},
            id="failed evaluation without a code is GENERAL",
        ),
    ],
)
def test_ofrep_errors_carry_a_code_and_details_and_no_value(
    answer: Evaluation, expected: dict[str, Any]
) -> None:
    assert evaluation_to_ofrep(answer) == expected


def test_an_ofrep_request_error_names_the_flag_only_when_there_is_one() -> None:
    assert ofrep_error(ErrorCode.INVALID_CONTEXT, "context must be a JSON object", "k") == {
        "errorCode": "INVALID_CONTEXT",
        "errorDetails": "context must be a JSON object",
        "key": "k",
    }
    assert ofrep_error(ErrorCode.PARSE_ERROR, "not JSON") == {
        "errorCode": "PARSE_ERROR",
        "errorDetails": "not JSON",
    }


def test_the_native_answer_names_the_rollout_with_its_regions_sorted() -> None:
    body = evaluation_to_dict(SPLIT)
    assert body["rollout"]["regions"] == ["eu-west-1", "us-west-1"]
    assert body["flagVersion"] == 3
    assert "errorCode" not in body


def test_metadata_without_a_rollout_is_the_flag_version_alone() -> None:
    assert flag_metadata(Evaluation("k", "blue", "blue", Reason.STATIC, flag_version=9)) == {
        "flagVersion": 9
    }


def test_json_is_compact_utf8_in_key_order() -> None:
    assert to_json({"b": "é ✓", "a": [1, None, True]}) == '{"b":"é ✓","a":[1,null,true]}'.encode()


def test_json_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        to_json({"percent": float("nan")})


def test_the_bulk_answer_is_the_whole_object_written_at_once() -> None:
    items = [
        evaluation_to_ofrep(SPLIT),
        evaluation_to_ofrep(Evaluation("x", 1, "a", Reason.STATIC)),
    ]
    assert bulk_answer(to_json(item) for item in items) == to_json({"flags": items})
    assert bulk_answer([]) == b'{"flags":[]}'


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@given(st.lists(st.dictionaries(st.text(), JSON_VALUES, max_size=4), max_size=5))
def test_bulk_joining_written_items_equals_writing_the_list(items: list[dict[str, Any]]) -> None:
    joined = bulk_answer(to_json(item) for item in items)
    assert joined == to_json({"flags": items})
    assert json.loads(joined) == {"flags": items}
