"""The real openfeature-sdk against a running ``rollout serve``, through our provider
(local evaluation, flags/sdk/openfeature.py) and through the published OFREP provider
(openfeature-provider-ofrep, unchanged): the same answers, field for field."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.provider import FeatureProvider

from flags.bucketing import bucket
from flags.sdk.client import FlagClient
from flags.sdk.openfeature import RolloutProvider
from tests.serving import Server, free_port, plan_yaml

BOOL = {"off": False, "on": True}
SPLIT_50 = [{"when": [], "split": {"on": 50, "off": 50}}]
FLAGS: dict[str, dict[str, Any]] = {
    "of-bool": {"type": "boolean", "variants": BOOL, "default_variant": "on"},
    "of-string": {
        "type": "string",
        "variants": {"blue": "blue", "green": "green"},
        "default_variant": "blue",
        "rules": [
            {
                "when": [{"attribute": "region", "op": "in", "values": ["eu-west-1"]}],
                "variant": "green",
            }
        ],
    },
    "of-int": {"type": "number", "variants": {"small": 3, "big": 30}, "default_variant": "small"},
    "of-float": {
        "type": "number",
        "variants": {"low": 0.25, "high": 0.75},
        "default_variant": "high",
    },
    "of-object": {
        "type": "object",
        "variants": {"compact": {"rows": 10, "dense": True}, "roomy": {"rows": 4}},
        "default_variant": "compact",
    },
    "of-disabled": {
        "type": "boolean",
        "variants": BOOL,
        "default_variant": "off",
        "enabled": False,
        "rules": [{"when": [], "variant": "on"}],
    },
    "of-split": {"type": "boolean", "variants": BOOL, "default_variant": "off", "rules": SPLIT_50},
}
USER = "user-0042"
EU = EvaluationContext(USER, {"region": "eu-west-1"})
US = EvaluationContext(USER, {"region": "us-east-1"})
NO_KEY = EvaluationContext(None, {"region": "us-east-1"})


@dataclass(frozen=True)
class Case:
    kind: str  # boolean, string, integer, float, object
    flag: str
    default: Any
    context: EvaluationContext
    value: Any
    variant: str | None
    reason: str
    error: ErrorCode | None = None


SPLIT_SIDE = "on" if bucket("of-split", USER) < 5000 else "off"
CASES = {
    "boolean": Case("boolean", "of-bool", False, US, True, "on", Reason.STATIC),
    "string targeted": Case(
        "string", "of-string", "x", EU, "green", "green", Reason.TARGETING_MATCH
    ),
    "string default": Case("string", "of-string", "x", US, "blue", "blue", Reason.DEFAULT),
    "integer": Case("integer", "of-int", 0, US, 3, "small", Reason.STATIC),
    "float": Case("float", "of-float", 0.0, US, 0.75, "high", Reason.STATIC),
    "object": Case(
        "object", "of-object", {}, US, {"rows": 10, "dense": True}, "compact", Reason.STATIC
    ),
    "disabled": Case("boolean", "of-disabled", True, US, False, "off", Reason.DISABLED),
    "split": Case("boolean", "of-split", False, US, SPLIT_SIDE == "on", SPLIT_SIDE, Reason.SPLIT),
    # PRODUCT.md: no targeting key on a split is the flag's safe default, not an error.
    "split without targeting key": Case(
        "boolean", "of-split", True, NO_KEY, False, "off", Reason.DEFAULT
    ),
    "missing flag": Case(
        "string",
        "of-nope",
        "fallback",
        US,
        "fallback",
        None,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    ),
    "type mismatch": Case(
        "boolean", "of-string", True, US, True, None, Reason.ERROR, ErrorCode.TYPE_MISMATCH
    ),
    "integer asked of a string": Case(
        "integer", "of-string", 7, US, 7, None, Reason.ERROR, ErrorCode.TYPE_MISMATCH
    ),
}


def details(client: OpenFeatureClient, case: Case) -> FlagEvaluationDetails[Any]:
    method: Callable[..., FlagEvaluationDetails[Any]] = getattr(client, f"get_{case.kind}_details")
    return method(case.flag, case.default, case.context)


@pytest.fixture(scope="module")
def sdk_token(server: Server) -> str:
    with server.client() as c:
        for key, body in FLAGS.items():
            r = c.put(f"/api/v1/flags/{key}", json={"key": key, **body})
            assert r.status_code in (200, 201), r.text
    return server.token("sdk", "openfeature-test")


def ours(server: Server, token: str) -> FeatureProvider:
    return RolloutProvider.connect(server.url, token, poll_interval=0.5)


def ofrep(server: Server, token: str) -> FeatureProvider:
    return OFREPProvider(server.url, headers_factory=lambda: {"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module", params=[ours, ofrep], ids=["rollout-provider", "ofrep-provider"])
def of_client(
    request: pytest.FixtureRequest, server: Server, sdk_token: str
) -> Iterator[OpenFeatureClient]:
    domain = f"test-{uuid.uuid4().hex[:8]}"
    provider = request.param(server, sdk_token)
    api.set_provider_and_wait(provider, domain)
    try:
        yield api.get_client(domain)
    finally:
        provider.shutdown()


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_openfeature_answers(of_client: OpenFeatureClient, case: Case) -> None:
    got = details(of_client, case)
    assert (got.value, got.variant, got.reason, got.error_code) == (
        case.value,
        case.variant,
        case.reason,
        case.error,
    )
    if case.error is None:
        assert got.flag_metadata["flagVersion"] == 1


def test_both_providers_agree_on_a_rollout_for_every_user(server: Server, sdk_token: str) -> None:
    name = "of-canary"
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": plan_yaml(name)}).status_code == 201
        c.post(f"/api/v1/rollouts/{name}/actions/start", json={})
        assert c.post(f"/api/v1/rollouts/{name}/actions/advance", json={}).status_code == 200
    local = RolloutProvider.connect(server.url, sdk_token, poll_interval=0.5)
    remote = OFREPProvider(
        server.url, headers_factory=lambda: {"Authorization": f"Bearer {sdk_token}"}
    )
    api.set_provider_and_wait(local, "agree-local")
    api.set_provider_and_wait(remote, "agree-remote")
    try:
        answers = set()
        for i in range(200):
            context = EvaluationContext(f"user-{i:04d}")
            pair = [
                api.get_client(domain).get_boolean_details(name, False, context)
                for domain in ("agree-local", "agree-remote")
            ]
            a, b = ((d.value, d.variant, d.reason, dict(d.flag_metadata)) for d in pair)
            assert a == b, context.targeting_key
            answers.add(a[:3])
            assert (a[3]["stage"], a[3]["percent"], a[3]["shadow"]) == ("canary", 5, True)
        assert answers == {(True, "on", Reason.SPLIT), (False, "off", Reason.SPLIT)}
    finally:
        local.shutdown()
        remote.shutdown()


def test_our_provider_says_not_ready_while_it_has_no_snapshot(tmp_path: Any) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    provider = RolloutProvider(
        FlagClient(nobody, "sdk-token", poll_interval=0.2, timeout=0.5), ready_timeout=0.3
    )
    api.set_provider(provider, "not-ready")
    try:
        got = api.get_client("not-ready").get_string_details("of-string", "fallback", US)
        assert (got.value, got.variant, got.reason, got.error_code) == (
            "fallback",
            None,
            Reason.ERROR,
            ErrorCode.PROVIDER_NOT_READY,
        )
    finally:
        provider.shutdown()


def test_our_provider_announces_flag_changes(server: Server, sdk_token: str) -> None:
    body = {"key": "of-change", "type": "boolean", "variants": BOOL, "default_variant": "on"}
    with server.client() as c:
        assert c.put("/api/v1/flags/of-change", json=body).status_code == 201
    provider = RolloutProvider.connect(server.url, sdk_token, poll_interval=0.2)
    api.set_provider_and_wait(provider, "changes")
    changed: list[list[str] | None] = []
    client = api.get_client("changes")
    client.add_handler(
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        lambda details: changed.append(details.flags_changed),
    )
    try:
        assert client.get_boolean_value("of-change", False, US) is True
        with server.client() as c:
            body.update(default_variant="off", version=1)
            assert c.put("/api/v1/flags/of-change", json=body).status_code == 200
        deadline = time.monotonic() + 5
        while ["of-change"] not in changed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ["of-change"] in changed
        assert client.get_boolean_value("of-change", True, US) is False
    finally:
        provider.shutdown()


def test_ofrep_provider_with_a_bad_token_fails_closed(server: Server, sdk_token: str) -> None:
    provider = OFREPProvider(server.url, headers_factory=lambda: {"Authorization": "Bearer nope"})
    api.set_provider_and_wait(provider, "bad-token")
    got = api.get_client("bad-token").get_boolean_details("of-bool", False, US)
    assert (got.value, got.reason, got.error_code) == (False, Reason.ERROR, ErrorCode.GENERAL)
    assert got.error_message == "unauthorized"
