"""The OpenFeature provider's mapping, through the real openfeature-sdk client, over a
FlagClient fed by the in-memory controller: number types, object copies, readiness."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from flags.sdk.client import FlagClient
from flags.sdk.openfeature import RolloutProvider
from tests.unit.fake_controller import FakeController, flag

USER = EvaluationContext("user-1")


@pytest.fixture
def controller() -> FakeController:
    c = FakeController()
    c.publish(
        1,
        flag("whole", "number", {"three": 3.0}, "three"),
        flag("half", "number", {"half": 2.5}, "half"),
        flag("count", "number", {"seven": 7}, "seven"),
        flag("on", "boolean", {"on": True}, "on"),
        flag("layout", "object", {"grid": {"columns": [1, 2]}}, "grid"),
    )
    return c


@pytest.fixture
def client(controller: FakeController) -> Iterator[OpenFeatureClient]:
    flags = FlagClient("http://controller.invalid", "t", transport=controller, start=False)
    flags.poll()
    domain = f"unit-{uuid.uuid4().hex[:8]}"
    provider = RolloutProvider(flags)
    api.set_provider_and_wait(provider, domain)
    yield api.get_client(domain)
    provider.shutdown()


def test_a_whole_number_answers_as_an_integer_and_a_fraction_does_not(
    client: OpenFeatureClient,
) -> None:
    whole = client.get_integer_details("whole", 0, USER)
    assert (whole.value, type(whole.value), whole.error_code) == (3, int, None)
    half = client.get_integer_details("half", 0, USER)
    assert (half.value, half.reason, half.error_code) == (0, Reason.ERROR, ErrorCode.TYPE_MISMATCH)


def test_every_number_answers_as_a_float(client: OpenFeatureClient) -> None:
    count = client.get_float_details("count", 0.0, USER)
    assert (count.value, type(count.value), count.variant) == (7.0, float, "seven")


def test_a_boolean_is_not_an_integer(client: OpenFeatureClient) -> None:
    got = client.get_integer_details("on", 5, USER)
    assert (got.value, got.error_code) == (5, ErrorCode.TYPE_MISMATCH)


def test_an_object_answer_is_a_copy_the_caller_may_change(client: OpenFeatureClient) -> None:
    first = client.get_object_value("layout", {}, USER)
    assert isinstance(first, dict)
    first["columns"].append(3)
    assert client.get_object_value("layout", {}, USER) == {"columns": [1, 2]}


def test_without_a_snapshot_the_provider_is_not_ready(controller: FakeController) -> None:
    controller.down = True
    flags = FlagClient("http://controller.invalid", "t", transport=controller, start=False)
    provider = RolloutProvider(flags, ready_timeout=0.05)
    domain = f"unit-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ProviderNotReadyError):
        api.set_provider_and_wait(provider, domain)
    client = api.get_client(domain)
    got = client.get_boolean_details("on", False, USER)
    assert (got.value, got.reason, got.error_code) == (
        False,
        Reason.ERROR,
        ErrorCode.PROVIDER_NOT_READY,
    )
    controller.down = False
    flags.poll()  # the client's READY event makes the provider READY
    assert client.get_provider_status() is ProviderStatus.READY
    assert client.get_boolean_value("on", False, USER) is True
    provider.shutdown()
