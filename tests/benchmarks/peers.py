"""The peer SDKs, each set up offline with the same 5 % rollout flag, for the benchmark.

Each setup returns a ``Contender``: a loop over users in the SDK's own idiom (timed),
and a one-user answer (to check that it serves about 5 %). Nothing here touches the
network: every SDK reads its flag from a dict or a file, with metrics, events and
registration off. A peer that is not installed (``pip install -e '.[bench]'``) or
fails to set up is reported as unavailable with the reason, not as a number.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY = "memory-layer"
PERCENT = 5
# An address nothing listens on: an SDK that tries the network anyway fails at once,
# on loopback.
NOWHERE = "http://127.0.0.1:9"


@dataclass(frozen=True)
class Contender:
    name: str
    group: str  # "floor", "ours", "peer"
    via_openfeature: bool
    run: Callable[[Sequence[str]], None]  # evaluate every user once
    answer: Callable[[str], bool]  # one user's value


Setup = Callable[[ExitStack, Path], list[Contender]]


def openfeature_contender(name: str, group: str, provider: Any, stack: ExitStack) -> Contender:
    """A contender asking through an OpenFeature client bound to ``provider``."""
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    # Waits for the provider's initialize(): until then it would answer NOT_READY.
    api.set_provider_and_wait(provider, domain=name)
    stack.callback(api.clear_providers)
    client = api.get_client(domain=name)

    def run(users: Sequence[str]) -> None:
        get = client.get_boolean_value
        for user in users:
            get(KEY, False, EvaluationContext(user))

    def answer(user: str) -> bool:
        return bool(client.get_boolean_value(KEY, False, EvaluationContext(user)))

    return Contender(name, group, True, run, answer)


# -- Unleash ---------------------------------------------------------------------


def unleash(stack: ExitStack, workdir: Path) -> list[Contender]:
    from openfeature.contrib.provider.unleash import UnleashProvider
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    features = {
        "version": 2,
        "features": [
            {
                "name": KEY,
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {
                            "rollout": str(PERCENT),
                            "stickiness": "userId",
                            "groupId": KEY,
                        },
                    }
                ],
            }
        ],
    }

    def offline_cache(name: str) -> FileCache:
        cache = FileCache(name, directory=str(workdir / name))
        cache.bootstrap_from_dict(features)
        return cache

    client = UnleashClient(
        NOWHERE,
        "bench",
        disable_metrics=True,
        disable_registration=True,
        cache=offline_cache("unleash"),
    )
    client.initialize_client(fetch_toggles=False)
    stack.callback(client.destroy)

    def run(users: Sequence[str]) -> None:
        is_enabled = client.is_enabled
        for user in users:
            is_enabled(KEY, {"userId": user})

    native = Contender(
        "Unleash UnleashClient.is_enabled",
        "peer",
        False,
        run,
        lambda user: client.is_enabled(KEY, {"userId": user}),
    )
    provider = UnleashProvider(NOWHERE, "bench-of", "none", fetch_toggles=False)
    # The provider builds its own client with metrics and registration on; an offline
    # benchmark wants neither, so it gets one configured as above.
    of_client = UnleashClient(
        NOWHERE,
        "bench-of",
        disable_metrics=True,
        disable_registration=True,
        cache=offline_cache("unleash-of"),
    )
    provider.client = of_client
    stack.callback(provider.shutdown)
    return [native, openfeature_contender("Unleash via OpenFeature", "peer", provider, stack)]


# -- flagd (in-process resolver, offline flag file) ------------------------------------


def flagd(stack: ExitStack, workdir: Path) -> list[Contender]:
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    path = workdir / "flagd.json"
    path.write_text(
        json.dumps(
            {
                "flags": {
                    KEY: {
                        "state": "ENABLED",
                        "variants": {"on": True, "off": False},
                        "defaultVariant": "off",
                        # flagd buckets by flag key + targeting key, as we do.
                        "targeting": {"fractional": [["on", PERCENT], ["off", 100 - PERCENT]]},
                    }
                }
            }
        )
    )
    provider = FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    # Registered first, so it runs after the shutdown: flagd's shutdown only asks its
    # file watcher to stop, and a watcher that wakes once more after the directory is
    # gone prints a traceback.
    stack.callback(_join_flagd_watcher, provider)
    of = openfeature_contender("flagd via OpenFeature", "peer", provider, stack)

    def run(users: Sequence[str]) -> None:
        resolve = provider.resolve_boolean_details
        for user in users:
            resolve(KEY, False, EvaluationContext(user))

    def answer(user: str) -> bool:
        return bool(provider.resolve_boolean_details(KEY, False, EvaluationContext(user)).value)

    return [Contender("flagd in-process provider", "peer", False, run, answer), of]


def _join_flagd_watcher(provider: Any) -> None:
    connector = getattr(getattr(provider, "resolver", None), "connector", None)
    thread = getattr(connector, "thread", None)
    if isinstance(thread, threading.Thread):
        thread.join(timeout=5)


# -- GrowthBook ------------------------------------------------------------------


GROWTHBOOK_FEATURES = {
    KEY: {
        "defaultValue": False,
        "rules": [{"force": True, "coverage": PERCENT / 100, "hashAttribute": "id"}],
    }
}


def growthbook(stack: ExitStack, workdir: Path) -> list[Contender]:
    from growthbook import GrowthBook

    gb = GrowthBook(features=GROWTHBOOK_FEATURES)
    stack.callback(gb.destroy)

    # One instance, its attributes set per user: the cheapest way this SDK allows.
    def run(users: Sequence[str]) -> None:
        set_attributes, is_on = gb.set_attributes, gb.is_on
        for user in users:
            set_attributes({"id": user})
            is_on(KEY)

    def answer(user: str) -> bool:
        gb.set_attributes({"id": user})
        return gb.is_on(KEY)

    native = Contender("GrowthBook is_on", "peer", False, run, answer)
    return [native, *growthbook_openfeature(stack)]


def growthbook_openfeature(stack: ExitStack) -> list[Contender]:
    from growthbook.common_types import Options
    from growthbook.growthbook_client import GrowthBookClient
    from growthbook_openfeature_provider import GrowthBookProvider, GrowthBookProviderOptions

    provider = GrowthBookProvider(GrowthBookProviderOptions(api_host=NOWHERE, client_key="none"))
    # The provider's client fetches features from api_host; offline, they are handed in.
    client = GrowthBookClient(Options(api_host=NOWHERE, client_key="none"))
    # The provider's sync methods run its async ones on the thread's event loop.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stack.callback(loop.close)
    stack.callback(asyncio.set_event_loop, None)
    loop.run_until_complete(client.set_features(GROWTHBOOK_FEATURES))
    provider.client = client
    provider.initialized = True
    # Its initialize() would fetch from api_host, and takes no evaluation context, which
    # openfeature-sdk passes: the features are in already, so there is nothing to do.
    provider.initialize = lambda *_args: None
    return [openfeature_contender("GrowthBook via OpenFeature", "peer", provider, stack)]


# -- LaunchDarkly --------------------------------------------------------------------


def launchdarkly(stack: ExitStack, workdir: Path) -> list[Contender]:
    from ld_openfeature import LaunchDarklyProvider
    from ldclient import Context, LDClient
    from ldclient.config import Config
    from ldclient.integrations import Files

    path = workdir / "launchdarkly.json"
    path.write_text(
        json.dumps(
            {
                "flags": {
                    KEY: {
                        "key": KEY,
                        "on": True,
                        "variations": [False, True],
                        "offVariation": 0,
                        "fallthrough": {
                            "rollout": {
                                "variations": [
                                    {"variation": 1, "weight": PERCENT * 1000},
                                    {"variation": 0, "weight": (100 - PERCENT) * 1000},
                                ]
                            }
                        },
                        "salt": KEY,
                        "version": 1,
                    }
                }
            }
        )
    )

    def config() -> Config:
        return Config(
            "sdk-offline",
            update_processor_class=Files.new_data_source(paths=[str(path)]),
            send_events=False,
            diagnostic_opt_out=True,
            base_uri=NOWHERE,
            events_uri=NOWHERE,
            stream_uri=NOWHERE,
        )

    client = LDClient(config(), start_wait=5)
    stack.callback(client.close)

    def run(users: Sequence[str]) -> None:
        variation, create = client.variation, Context.create
        for user in users:
            variation(KEY, create(user), False)

    native = Contender(
        "LaunchDarkly LDClient.variation",
        "peer",
        False,
        run,
        lambda user: bool(client.variation(KEY, Context.create(user), False)),
    )
    provider = LaunchDarklyProvider(config(), start_wait=5)
    stack.callback(provider.shutdown)
    return [native, openfeature_contender("LaunchDarkly via OpenFeature", "peer", provider, stack)]


PEERS: dict[str, Setup] = {
    "Unleash": unleash,
    "flagd": flagd,
    "GrowthBook": growthbook,
    "LaunchDarkly": launchdarkly,
}


@contextmanager
def peer_contenders() -> Iterator[tuple[list[Contender], dict[str, str]]]:
    """Every peer that sets up, and why the others did not."""
    contenders: list[Contender] = []
    unavailable: dict[str, str] = {}
    # The directory outlives the providers: flagd's file watcher reads it until shutdown.
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        for name, setup in PEERS.items():
            try:
                contenders.extend(setup(stack, Path(tmp)))
            except Exception as exc:  # a missing or broken SDK is reported, not fatal
                logging.getLogger(__name__).debug("peer %s", name, exc_info=True)
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        yield contenders, unavailable
