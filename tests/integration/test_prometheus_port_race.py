"""The Prometheus the demo and the tests start picks a free port, closes it, and the
child binds it: another process can take it in between. Then it starts on another
port instead of failing with "address already in use"."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from controller.demo import prometheus_process
from controller.demo.prometheus_process import PrometheusProcess, PrometheusStartError


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_taken_after_it_was_chosen_gives_another(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race made certain: the first "free" port is one another socket holds.
    choices = iter([taken_port])
    real = prometheus_process.free_port
    monkeypatch.setattr(prometheus_process, "free_port", lambda: next(choices, None) or real())

    with PrometheusProcess([]) as prometheus:
        assert prometheus.port != taken_port
        with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=5) as answer:
            assert answer.status == 200


def test_a_port_the_caller_chose_is_not_replaced(taken_port: int) -> None:
    with pytest.raises(PrometheusStartError, match="address already in use"):
        PrometheusProcess([], port=taken_port).start()
