"""A scrape target whose traffic a test controls, for gates against a real Prometheus.

``MetricsTarget`` serves ``/metrics`` from its own registry and, every 50 ms, adds the
requests, errors and latencies that ``set_traffic`` asked for, so ``rate()`` queries see
counters that grow like a real service's.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from controller.demo.service import DemoMetrics

TICK_S = 0.05


@dataclass(frozen=True, slots=True)
class Traffic:
    requests_per_second: float = 0.0
    error_ratio: float = 0.0
    latency_ms: float = 20.0


class MetricsTarget:
    def __init__(self) -> None:
        # The demo service's metric families: one definition of the names that the demo
        # plan and these tests query.
        metrics = DemoMetrics()
        self.registry = metrics.registry
        self.operations = metrics.operations
        self.latency = metrics.latency
        self._traffic: dict[str, Traffic] = {}
        # Fractions of a request (and of an error) carried to the next tick, so low rates
        # and small error ratios are not rounded away.
        self._carry: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self.registry))
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def set_traffic(
        self,
        *,
        variant: str,
        requests_per_second: float,
        error_ratio: float = 0.0,
        latency_ms: float = 20.0,
    ) -> None:
        with self._lock:
            self._traffic[variant] = Traffic(requests_per_second, error_ratio, latency_ms)
            # Export the series at once, even at zero, so queries see them from the next scrape.
            for status in ("ok", "error"):
                self.operations.labels(variant=variant, status=status)
            self.latency.labels(variant=variant)

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True),
            threading.Thread(target=self._simulate, name="metrics-traffic", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._threads:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._server.server_close()

    def __enter__(self) -> MetricsTarget:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _simulate(self) -> None:
        while not self._closed.wait(TICK_S):
            with self._lock:
                for variant, traffic in self._traffic.items():
                    self._tick(variant, traffic)

    def _tick(self, variant: str, traffic: Traffic) -> None:
        carried_requests, carried_errors = self._carry.get(variant, (0.0, 0.0))
        due = traffic.requests_per_second * TICK_S + carried_requests
        count = int(due)
        due_errors = count * traffic.error_ratio + carried_errors
        errors = min(count, int(due_errors))
        self._carry[variant] = (due - count, due_errors - errors)
        if count == 0:
            return
        self.operations.labels(variant=variant, status="error").inc(errors)
        self.operations.labels(variant=variant, status="ok").inc(count - errors)
        histogram = self.latency.labels(variant=variant)
        for _ in range(count):
            histogram.observe(traffic.latency_ms)


def _handler_for(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(registry)
            self.send_response(200)
            # 0.0.4: the text format Prometheus 2.42 was built for.
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every second would drown the test output

    return MetricsHandler
