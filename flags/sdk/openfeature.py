"""An OpenFeature provider over ``FlagClient``: local evaluation behind the standard API.

Needs the optional extra: ``pip install 'rollout-controller[openfeature]'``. This is the
only module in ``flags`` that imports ``openfeature`` (ruff's banned-api keeps it so),
so the SDK itself works without it.

    from openfeature import api
    from flags.sdk.openfeature import RolloutProvider

    api.set_provider(RolloutProvider.connect("http://127.0.0.1:8080", token))
    api.get_client().get_boolean_value("memory-layer", False, EvaluationContext("u-81c2"))

Answers are the server's, mapped one to one: value, variant, reason, error code and,
as flag metadata, the flag version and the rollout's stage, percent and shadow. A
missing targeting key on a split is the flag's default variant with reason ``DEFAULT``
and no error code, as over OFREP: OpenFeature would swap an error's value for the
caller's default, and the flag's default is the safe side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from openfeature.evaluation_context import EvaluationContext as OpenFeatureContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode as OpenFeatureErrorCode
from openfeature.exception import ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.flag_evaluation import Reason as OpenFeatureReason
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, Metadata

from flags.model import EvaluationContext, Reason
from flags.sdk.client import NOT_READY_MESSAGE, ClientEvent, FlagClient
from flags.wire import flag_metadata

PROVIDER_NAME = "rollout-controller"

T = TypeVar("T")


class RolloutProvider(AbstractProvider):
    def __init__(
        self, client: FlagClient, *, ready_timeout: float = 5.0, owns_client: bool = True
    ) -> None:
        super().__init__()
        self.client = client
        self._ready_timeout = ready_timeout
        self._owns_client = owns_client
        client.add_listener(self._on_client_event)

    @classmethod
    def connect(cls, url: str, token: str, **options: Any) -> RolloutProvider:
        """A provider over a new ``FlagClient`` (``options`` go to it), closed on shutdown."""
        ready_timeout = options.pop("ready_timeout", 5.0)
        return cls(FlagClient(url, token, **options), ready_timeout=ready_timeout)

    def get_metadata(self) -> Metadata:
        return Metadata(name=PROVIDER_NAME)

    def get_provider_hooks(self) -> list[Hook]:
        return []

    def initialize(self, evaluation_context: OpenFeatureContext) -> None:
        # Raising leaves the provider in ERROR (evaluations still reach us and answer
        # PROVIDER_NOT_READY); the client's READY event makes it READY once a snapshot
        # arrives.
        if not self.client.wait_until_ready(self._ready_timeout):
            raise ProviderNotReadyError(NOT_READY_MESSAGE)

    def shutdown(self) -> None:
        if self._owns_client:
            self.client.close()

    def _on_client_event(self, event: ClientEvent, keys: frozenset[str]) -> None:
        if event in (ClientEvent.READY, ClientEvent.RECOVERED):
            self.emit_provider_ready(ProviderEventDetails())
        elif event is ClientEvent.CHANGED:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(flags_changed=sorted(keys))
            )
        elif event is ClientEvent.STALE:
            self.emit_provider_stale(
                ProviderEventDetails(message="controller unreachable: last snapshot in use")
            )

    # -- resolution -------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_bool)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_str)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_int)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_float)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: OpenFeatureContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._resolve(flag_key, default_value, evaluation_context, _as_object)

    def _resolve(
        self,
        key: str,
        default: T,
        context: OpenFeatureContext | None,
        convert: Callable[[Any], T | None],
    ) -> FlagResolutionDetails[T]:
        if not self.client.ready:
            return _error(default, OpenFeatureErrorCode.PROVIDER_NOT_READY, NOT_READY_MESSAGE)
        evaluation = self.client.evaluate(key, _context(context))
        if evaluation.reason is Reason.ERROR:
            code = OpenFeatureErrorCode(evaluation.error_code or "GENERAL")
            return _error(default, code, evaluation.error_message)
        value = convert(evaluation.value)
        if value is None:
            kind = type(evaluation.value).__name__
            message = f"flag {key!r} is a {kind}, not the type asked for"
            return _error(default, OpenFeatureErrorCode.TYPE_MISMATCH, message)
        return FlagResolutionDetails(
            value=value,
            reason=OpenFeatureReason(evaluation.reason.value),
            variant=evaluation.variant,
            flag_metadata=flag_metadata(evaluation),
        )


def _context(context: OpenFeatureContext | None) -> EvaluationContext:
    if context is None:
        return EvaluationContext()
    return EvaluationContext(context.targeting_key or None, dict(context.attributes))


def _error(default: T, code: OpenFeatureErrorCode, message: str | None) -> FlagResolutionDetails[T]:
    return FlagResolutionDetails(
        value=default, reason=OpenFeatureReason.ERROR, error_code=code, error_message=message
    )


# Each returns the value as the asked-for type, or None when it is not that type.


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_int(value: Any) -> int | None:
    # A number flag's 3.0 is an integer; 2.5 is not, and neither is True.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def _as_object(value: Any) -> dict[str, Any] | list[Any] | None:
    # A copy: the snapshot's value is shared by every caller and must not be mutated.
    return copy.deepcopy(value) if isinstance(value, dict | list) else None
