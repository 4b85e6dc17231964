"""The Python SDK: evaluates flags in-process with the server's own code.

A daemon thread polls ``GET /api/v1/snapshot`` with ``If-None-Match`` and swaps the
new snapshot in with one assignment, so ``evaluate`` never takes a lock. Where the
answer comes from, best first:

1. the latest snapshot from the controller (kept, and marked stale, while the
   controller is unreachable);
2. at start, the cache file this client last wrote, else the bootstrap file;
3. nothing: the caller's default, reason ``ERROR``, error code ``PROVIDER_NOT_READY``.

The same thread sends evaluation counts and sampled impressions in batches to
``POST /api/v1/evaluations/report``; nothing on the caller's path waits on the network.

    with FlagClient("http://127.0.0.1:8080", token) as flags:
        flags.wait_until_ready(2)
        if flags.boolean_value("memory-layer", False, EvaluationContext("u-81c2")):
            ...
"""

from __future__ import annotations

import enum
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flags.codec import FlagDefinitionError, snapshot_from_dict
from flags.compiled import Evaluator
from flags.model import ErrorCode, Evaluation, EvaluationContext, Reason
from flags.sdk.reporting import Recorder
from flags.sdk.transport import HttpTransport, Transport, TransportError
from flags.snapshot import Snapshot

log = logging.getLogger(__name__)

SNAPSHOT_PATH: Final = "/api/v1/snapshot"
REPORT_PATH: Final = "/api/v1/evaluations/report"
NOT_READY_MESSAGE: Final = (
    "PROVIDER_NOT_READY: no flag snapshot yet (controller unreachable, no bootstrap file)"
)
_NO_CONTEXT: Final = EvaluationContext()
# Status codes that say the report itself is malformed: sending it again cannot help.
_REJECTED: Final = frozenset({400, 413, 422})


class Source(enum.StrEnum):
    NONE = "none"
    BOOTSTRAP = "bootstrap"
    CACHE = "cache"
    SERVER = "server"


class ClientEvent(enum.StrEnum):
    READY = "ready"  # the first snapshot is in (from any source)
    CHANGED = "changed"  # a newer snapshot changed these flags
    STALE = "stale"  # the controller stopped answering; serving the last snapshot
    RECOVERED = "recovered"  # the controller answers again


Listener = Callable[[ClientEvent, frozenset[str]], None]


@dataclass(frozen=True, slots=True)
class ClientStatus:
    ready: bool
    source: Source
    revision: int | None
    stale: bool  # the last poll failed: answers come from an older snapshot
    consecutive_failures: int


class FlagClient:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        poll_interval: float = 30.0,
        flush_interval: float = 10.0,
        timeout: float = 5.0,
        bootstrap_path: str | Path | None = None,
        cache_path: str | Path | None = None,
        defaults: Mapping[str, Any] | None = None,
        impression_rate: float = 0.0,
        max_impressions: int = 1_000,
        transport: Transport | None = None,
        start: bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if poll_interval <= 0 or flush_interval <= 0 or timeout <= 0:
            raise ValueError("poll_interval, flush_interval and timeout must be positive")
        self._poll_interval = poll_interval
        self._flush_interval = flush_interval
        self._defaults = dict(defaults or {})
        self._cache_path = Path(cache_path) if cache_path is not None else None
        self._transport = transport or HttpTransport(url, token, timeout)
        self._rng = rng or random.Random()
        self.recorder = Recorder(
            impression_rate=impression_rate, max_impressions=max_impressions, clock=clock
        )
        # Readers take only this reference; it is replaced whole, never mutated.
        self._snapshot: Snapshot | None = None
        self._evaluators: Mapping[str, Evaluator] = {}  # always the one of _snapshot
        self._source = Source.NONE
        self._etag: str | None = None  # only from the controller: a file's could be foreign
        self._failures = 0
        self._polled = False
        self._changed = threading.Condition()
        self._io_lock = threading.Lock()  # one request at a time on the one connection
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._closed = False
        self._load_file(bootstrap_path)
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="flag-client", daemon=True)
            self._thread.start()

    # -- answers (the caller's thread; never blocks, never raises) -----------------------

    def evaluate(self, key: str, context: EvaluationContext | None = None) -> Evaluation:
        context = context or _NO_CONTEXT
        return self.evaluate_key(key, context.targeting_key, context.attributes)

    def evaluate_key(
        self,
        key: str,
        targeting_key: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Evaluation:
        """``evaluate`` without building a context: the per-request fast path."""
        # One dict lookup and the flag's compiled evaluator (no call through Snapshot):
        # this runs on every request of the service, so the unusual cases (not ready,
        # unknown flag, an error answer the caller gave a default for) come after.
        try:
            evaluator = self._evaluators[key]
        except KeyError:
            evaluation = self._unknown(key, targeting_key, attributes)
        else:
            evaluation = evaluator(targeting_key, attributes)
            if self._defaults and evaluation.reason is Reason.ERROR and key in self._defaults:
                evaluation = _with_value(evaluation, self._defaults[key])
        self.recorder.record(key, evaluation.variant, targeting_key)
        return evaluation

    def _unknown(
        self, key: str, targeting_key: str | None, attributes: Mapping[str, Any] | None
    ) -> Evaluation:
        snapshot = self._snapshot
        if snapshot is None:
            return _not_ready(key, self._defaults.get(key))
        evaluation = snapshot.evaluate_key(key, targeting_key, attributes)
        if key in self._defaults:
            evaluation = _with_value(evaluation, self._defaults[key])
        return evaluation

    def boolean_value(
        self, key: str, default: bool, context: EvaluationContext | None = None
    ) -> bool:
        value = self._usable(key, context)
        return value if isinstance(value, bool) else default

    def string_value(self, key: str, default: str, context: EvaluationContext | None = None) -> str:
        value = self._usable(key, context)
        return value if isinstance(value, str) else default

    def number_value(
        self, key: str, default: float, context: EvaluationContext | None = None
    ) -> float:
        value = self._usable(key, context)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return default

    def object_value(
        self, key: str, default: Mapping[str, Any], context: EvaluationContext | None = None
    ) -> Mapping[str, Any]:
        value = self._usable(key, context)
        return value if isinstance(value, Mapping) else default

    def _usable(self, key: str, context: EvaluationContext | None) -> Any:
        evaluation = self.evaluate(key, context)
        # A missing targeting key is reason DEFAULT: the flag's safe default, still usable.
        return None if evaluation.reason is Reason.ERROR else evaluation.value

    # -- state ------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def status(self) -> ClientStatus:
        snapshot = self._snapshot
        return ClientStatus(
            ready=snapshot is not None,
            source=self._source,
            revision=None if snapshot is None else snapshot.revision,
            stale=self._failures > 0,
            consecutive_failures=self._failures,
        )

    def wait_until_ready(self, timeout: float) -> bool:
        """Wait for the controller's snapshot, or for a first failed poll when a file
        already gave one; ``True`` when there is a snapshot to answer from."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._source is Source.SERVER or (self._polled and self.ready),
                timeout,
            )
        return self.ready

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` on each ``ClientEvent``, from the client's thread (and at once
        with ``READY`` when a snapshot is already in); its exceptions are logged."""
        self._listeners.append(listener)
        if self.ready:
            self._emit(ClientEvent.READY, frozenset())

    # -- the background thread ----------------------------------------------------------

    def _run(self) -> None:
        next_poll = next_flush = time.monotonic()
        next_flush += self._flush_interval
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self._next_poll_delay(self._guarded(self.poll, False))
            if now >= next_flush:
                self._guarded(self.flush, False)
                next_flush = now + self._flush_interval
            self._stop.wait(max(0.0, min(next_poll, next_flush) - time.monotonic()))
        self._guarded(self.flush, False)  # what was counted since the last flush
        self._transport.close()

    def _guarded(self, step: Callable[[], bool], failed: bool) -> bool:
        try:
            return step()
        except Exception:  # the thread must outlive any bug in one step
            log.exception("flag client: %s failed", step.__name__)
            return failed

    def _next_poll_delay(self, ok: bool) -> float:
        # Jitter spreads a fleet's polls apart. Both delays stay at or under the poll
        # interval, so a change is seen within one interval even right after an outage;
        # the backoff only spaces out the first quick retries.
        if ok:
            return self._poll_interval * self._rng.uniform(0.8, 1.0)
        backoff = min(self._poll_interval, 0.5 * 2.0 ** min(self._failures, 16))
        return backoff * self._rng.uniform(0.5, 1.0)

    def poll(self) -> bool:
        """Fetch the snapshot if it changed; ``False`` when the controller did not give one.

        The background thread calls this; with ``start=False`` the caller may instead."""
        headers = {"Accept": "application/json"}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        with self._io_lock:
            try:
                reply = self._transport.request("GET", SNAPSHOT_PATH, headers)
            except TransportError as exc:
                return self._poll_failed(str(exc))
        if reply.status == 304 and self._snapshot is not None:
            return self._poll_succeeded()
        if reply.status != 200:
            return self._poll_failed(f"HTTP {reply.status}: {reply.body[:200]!r}")
        try:
            data = reply.json()
            snapshot = snapshot_from_dict(data, lenient=True)
        except (ValueError, FlagDefinitionError) as exc:
            return self._poll_failed(f"unreadable snapshot: {exc}"[:500])
        except RecursionError:
            # JSON nested deeper than the parser goes: a broken or hostile answer.
            return self._poll_failed("unreadable snapshot: nested too deeply")
        _log_skipped(data, snapshot)
        self._etag = reply.headers.get("etag")
        self._install(snapshot, Source.SERVER)
        self._write_cache(data)
        return self._poll_succeeded()

    def flush(self) -> bool:
        """Send what was counted since the last report; never raises into the caller."""
        with self._io_lock:
            batch = self.recorder.take()
            if batch.empty:
                return True
            body = json.dumps(batch.to_json(), separators=(",", ":")).encode()
            try:
                reply = self._transport.request(
                    "POST", REPORT_PATH, {"Content-Type": "application/json"}, body
                )
            except TransportError as exc:
                self.recorder.unsent(batch)
                log.debug("evaluation report not sent: %s", exc)
                return False
        if 200 <= reply.status < 300:
            self.recorder.sent(batch)
            return True
        if reply.status in _REJECTED:
            self.recorder.rejected(batch)
            log.warning("controller refused an evaluation report: %s", reply.body[:500])
        else:
            self.recorder.unsent(batch)
        return False

    def _poll_succeeded(self) -> bool:
        if self._failures:
            log.info("controller reachable again after %d failed polls", self._failures)
            self._emit(ClientEvent.RECOVERED, frozenset())
        self._failures = 0
        self._mark_polled()
        return True

    def _poll_failed(self, why: str) -> bool:
        self._failures += 1
        if self._failures == 1:  # once per outage, not once per poll
            snapshot = self._snapshot
            serving = (
                "no snapshot: answering with callers' defaults"
                if snapshot is None
                else f"answering from revision {snapshot.revision} ({self._source})"
            )
            log.warning("flag snapshot poll failed (%s); %s", why, serving)
            self._emit(ClientEvent.STALE, frozenset())
        self._mark_polled()
        return False

    def _mark_polled(self) -> None:
        with self._changed:
            self._polled = True
            self._changed.notify_all()

    # -- snapshots from files and from the controller -----------------------------------

    def _install(self, snapshot: Snapshot, source: Source) -> None:
        previous = self._snapshot
        with self._changed:
            # What readers see. A reader between the two assignments evaluates against
            # the previous flags, as it would a moment earlier: never a mix of the two.
            self._snapshot = snapshot
            self._evaluators = snapshot.evaluators
            self._source = source
            self._changed.notify_all()
        if previous is None:
            self._emit(ClientEvent.READY, frozenset())
        elif changed := _changed_keys(previous, snapshot):
            self._emit(ClientEvent.CHANGED, changed)

    def _load_file(self, bootstrap_path: str | Path | None) -> None:
        candidates = [(self._cache_path, Source.CACHE)]
        candidates.append((Path(bootstrap_path) if bootstrap_path else None, Source.BOOTSTRAP))
        for path, source in candidates:
            if path is None or not path.exists():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                snapshot = snapshot_from_dict(data, lenient=True)
            except (OSError, ValueError, FlagDefinitionError, RecursionError) as exc:
                log.warning("ignoring %s file %s: %s", source, path, exc)
                continue
            _log_skipped(data, snapshot)
            self._install(snapshot, source)
            log.info("answering from %s file %s (revision %d)", source, path, snapshot.revision)
            return

    def _write_cache(self, data: object) -> None:
        """Keep the controller's latest answer for the next start (atomic: a crash
        leaves the old file or the new one, never half of one)."""
        path = self._cache_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out, separators=(",", ":"))
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("could not write the snapshot cache %s: %s", path, exc)

    def _emit(self, event: ClientEvent, keys: frozenset[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(event, keys)
            except Exception:
                log.exception("flag client listener failed on %s", event)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop polling and send the last report (bounded by ``timeout``)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self._guarded(self.flush, False)
            self._transport.close()

    def __enter__(self) -> FlagClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _not_ready(key: str, default: Any) -> Evaluation:
    return Evaluation(
        key, default, None, Reason.ERROR, ErrorCode.PROVIDER_NOT_READY, NOT_READY_MESSAGE
    )


def _with_value(evaluation: Evaluation, value: Any) -> Evaluation:
    return Evaluation(
        evaluation.key,
        value,
        evaluation.variant,
        evaluation.reason,
        evaluation.error_code,
        evaluation.error_message,
        evaluation.rollout,
        evaluation.flag_version,
    )


def _changed_keys(before: Snapshot, after: Snapshot) -> frozenset[str]:
    keys = before.flags.keys() | after.flags.keys()
    return frozenset(k for k in keys if before.flags.get(k) != after.flags.get(k))


def _log_skipped(data: object, snapshot: Snapshot) -> None:
    sent = data.get("flags") if isinstance(data, dict) else None
    if isinstance(sent, dict) and (skipped := sorted(set(sent) - set(snapshot.flags))):
        log.warning("flags this SDK cannot read, answered as unknown: %s", ", ".join(skipped))
