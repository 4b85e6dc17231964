"""The scheduler: every tick, a pass finds the active rollouts whose ``interval`` has
passed and hands each to a bounded pool of workers. A check is the four-line shell
around the pure core: load, read gates, decide, save.

Isolation is the point: the pass never waits on a check, at most one check per
rollout is in flight, every check runs under its own deadline (its interval, capped),
and a check that raises is an error for that rollout alone. A slow, huge or broken
rollout therefore costs one worker for a bounded time and never stops another
rollout's rollback.

Only the replica holding a rollout's lease checks it, and the save is a
compare-and-swap, so a person's action during the check wins over the tick.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy.exc import OperationalError
from sqlmodel import col, select

from controller.errors import NotFound, Refused, VersionConflict
from controller.gates import history as gate_history
from controller.gates.prometheus import GateSource
from controller.gates.reading import read_gates
from controller.rollouts import Rollouts
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import RolloutRow
from stages.actions import Action
from stages.decide import decide
from stages.decisions import Decision, Hold
from stages.durations import parse_duration
from stages.state import ACTIVE_STATUSES, GateReading, Outcome, RolloutState

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 8
# A check's deadline is its interval, within these bounds: a 1 h interval must not let
# a hung check hold a worker for an hour, and a sub-second one still gets a real try.
MIN_CHECK_DEADLINE = timedelta(seconds=1)
MAX_CHECK_DEADLINE = timedelta(seconds=60)
# Leases held by this replica are renewed this often (their TTL is Leases.ttl).
LEASE_RENEW_SECONDS = 5.0
# A check that took longer than this, or read any gate as error, runs in the slow lane
# next time: its own few workers, so rollouts whose Prometheus hangs queue behind each
# other and never in front of a healthy rollout's rollback. One fast, clean check
# brings it back.
SLOW_CHECK_SECONDS = 2.0
# Threads the fast lane may grow to while some of its workers are stuck (a thread blocked
# on a socket costs little), and how long a check runs before its worker counts as stuck.
MAX_THREADS = 256
STUCK_SECONDS = 1.0
LATENESS_SAMPLES = 4096
# A failed check is tried again after its interval, but at least this often.
MAX_RETRY_INTERVAL = timedelta(minutes=10)
# Checks that raise this many times in a row pause the rollout, for a person to see.
FAILURES_BEFORE_PAUSE = 3
# A pass not finished within this many ticks means the scheduler is stalled (/readyz).
STALL_TICKS = 3
_PRUNE = "(prune gate history)"  # not a rollout name: those are refused with parentheses
# Why a rollout may not advance now, from outside its plan (a freeze in scope, an alert's
# hold): the sentences for ``RolloutState.blocked``. Read once per check, so a freeze or
# an alert taken on any replica holds the next check of every replica.
Blocker = Callable[[RolloutState, datetime], Sequence[str]]
# Run once per pass with its ``now``, never raising into it (freeze expiry).
PassHook = Callable[[datetime], object]


def check_deadline(interval: timedelta) -> timedelta:
    return min(max(interval, MIN_CHECK_DEADLINE), MAX_CHECK_DEADLINE)


@dataclass
class CheckResult:
    rollout: str
    decision: Decision | None
    readings: list[GateReading]
    skipped: str | None = None
    error: str | None = None


@dataclass
class _Failing:
    since: datetime
    streak: int
    error: str


class Scheduler:
    def __init__(
        self,
        store: Store,
        rollouts: Rollouts,
        gates: GateSource,
        leases: Leases,
        clock: Callable[[], datetime],
        *,
        tick_seconds: float = 1.0,
        retention: timedelta = timedelta(days=14),
        workers: int = DEFAULT_WORKERS,
        blockers: Sequence[Blocker] = (),
        on_pass: Sequence[PassHook] = (),
    ) -> None:
        self._store = store
        # Why a rollout may not advance now, from outside its plan (a freeze in scope, an
        # alert's hold): read at each check into RolloutState.blocked.
        self._blockers = tuple(blockers)
        self._on_pass = tuple(on_pass)
        self._failing_hooks: set[PassHook] = set()
        self._rollouts = rollouts
        self._gates = gates
        self._leases = leases
        self._clock = clock
        self._tick_seconds = tick_seconds
        self._retention = retention
        workers = max(1, workers)
        self._lanes = {
            "fast": _Lane("fast", workers, max_threads=min(MAX_THREADS, workers * 16)),
            # Rollouts known to be slow wait for each other here, and never grow threads.
            # As many as the fast lane: their threads wait on sockets, and each hanging
            # rollout must still be read often enough to reach max_gate_errors.
            "slow": _Lane("slow", workers, max_threads=workers),
        }
        self._slow: set[str] = set()  # rollouts whose last check was slow or failed
        self._dispatcher: threading.Thread | None = None
        self._stopping = threading.Event()
        # Guards only the bookkeeping below, never I/O: nothing waits on a check.
        self._lock = threading.Lock()
        self._in_flight: dict[str, float] = {}  # rollout -> monotonic time it was queued
        self._not_before: dict[str, datetime] = {}  # failed checks wait an interval
        self._failing: dict[str, _Failing] = {}
        self._last_pruned: datetime | None = None
        self._last_renewed = 0.0
        self._created = time.monotonic()
        self._last_began = 0.0
        # Seen by /readyz and /metrics.
        self.last_pass_at: datetime | None = None
        self.last_pass_finished: float | None = None  # monotonic
        self.last_pass_lag: float = 0.0
        self.passes = 0
        self.checks = 0
        self.check_errors: dict[str, int] = {}
        # How late recent checks started after they were due, in seconds (/metrics).
        self.lateness: deque[float] = deque(maxlen=LATENESS_SAMPLES)
        # When passes began to fail (the database is down, say); None while they work.
        self.failing_since: datetime | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._start_workers()
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name="scheduler-dispatch", daemon=True
        )
        self._dispatcher.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop dispatching, give running checks up to ``timeout`` to finish, release
        the leases. Bounded: a check stuck past that is left to its daemon thread."""
        end = time.monotonic() + timeout
        self._stopping.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=max(0.0, end - time.monotonic()))
            self._dispatcher = None
        for lane in self._lanes.values():
            lane.stop(end)
        try:
            released = self._leases.release_all()
            if released:
                log.info("released %d lease(s) for other replicas to take over", released)
        except Exception as exc:  # the database may be gone; the leases expire anyway
            log.warning("could not release leases at shutdown: %s", _first_line(exc))

    @property
    def running(self) -> bool:
        return self._dispatcher is not None and self._dispatcher.is_alive()

    def _start_workers(self) -> None:
        for lane in self._lanes.values():
            lane.start()

    def _dispatch_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            self.run_pass()
            next_at += self._tick_seconds
            delay = next_at - time.monotonic()
            if delay < 0:  # a slow pass: start the next at once, do not catch up
                next_at, delay = time.monotonic(), 0.0
            if self._stopping.wait(delay):
                return

    # -- what /readyz and /metrics show ---------------------------------------------

    def last_pass_age(self) -> float:
        """Seconds since the last pass finished (since start, before the first)."""
        return time.monotonic() - (self.last_pass_finished or self._created)

    @property
    def stalled(self) -> bool:
        return self.last_pass_age() > STALL_TICKS * self._tick_seconds

    def in_flight(self) -> tuple[int, float | None]:
        """Checks queued or running, and the age in seconds of the oldest."""
        with self._lock:
            started = [at for key, at in self._in_flight.items() if key != _PRUNE]
        if not started:
            return 0, None
        return len(started), time.monotonic() - min(started)

    def lateness_quantiles(self, quantiles: tuple[float, ...]) -> dict[float, float]:
        """Quantiles of the recent checks' lateness in seconds (none before a check)."""
        with self._lock:
            samples = sorted(self.lateness)
        if not samples:
            return {}
        last = len(samples) - 1
        return {q: samples[min(last, round(q * last))] for q in quantiles}

    def slow_rollouts(self) -> int:
        """Rollouts whose next check goes to the slow lane."""
        with self._lock:
            return len(self._slow)

    def failing(self) -> dict[str, str]:
        """Rollouts whose last check raised, with the error."""
        with self._lock:
            return {name: f.error for name, f in self._failing.items()}

    # -- one pass ----------------------------------------------------------------------

    def run_pass(self) -> list[str]:
        """Queue a check of every rollout that is due and not already in flight; the
        names queued. Never waits for a check and never raises."""
        began = time.monotonic()
        if self.last_pass_at is not None and self.last_pass_finished is not None:
            self.last_pass_lag = max(0.0, began - self._last_began - self._tick_seconds)
        self._last_began = began
        self.last_pass_at = datetime.now(UTC)
        self.passes += 1
        queued: list[str] = []
        try:
            now = self._clock()
            self._renew_leases()
            self._run_pass_hooks(now)
            for name, interval, due_at in self._due(now):
                slow = name in self._slow
                task = partial(self._run_check, name, interval, due_at, now)
                if self._submit(name, task, slow=slow):
                    queued.append(name)
            self._prune_soon(now)
            for lane in self._lanes.values():
                lane.top_up()
        except OperationalError as exc:
            # Once per outage, not once per tick: a database down for an hour would
            # otherwise write thousands of identical lines.
            if self.failing_since is None:
                self.failing_since = self.last_pass_at
                log.warning("scheduler pass failed (database unavailable: %s)", _first_line(exc))
        except Exception:
            if self.failing_since is None:
                self.failing_since = self.last_pass_at
                log.exception("scheduler pass failed; trying again next tick")
        else:
            if self.failing_since is not None:
                log.warning("scheduler passes work again (failing since %s)", self.failing_since)
                self.failing_since = None
        self.last_pass_finished = time.monotonic()
        return queued

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Until no check is queued or running (tests drive passes one at a time)."""
        self._start_workers()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if not self._in_flight:
                    return True
            time.sleep(0.005)
        return False

    def _run_pass_hooks(self, now: datetime) -> None:
        for hook in self._on_pass:
            try:
                hook(now)
            except Exception as exc:  # e.g. the database is away: the pass goes on
                if hook not in self._failing_hooks:  # once per streak, not once per tick
                    self._failing_hooks.add(hook)
                    log.warning("scheduler pass hook %r failed: %s", hook, _first_line(exc))
            else:
                self._failing_hooks.discard(hook)

    def _renew_leases(self) -> None:
        if time.monotonic() - self._last_renewed < LEASE_RENEW_SECONDS:
            return
        self._leases.renew()
        self._last_renewed = time.monotonic()

    def _due(self, now: datetime) -> list[tuple[str, timedelta, datetime | None]]:
        with self._store.read() as session:
            # The interval alone, extracted by the database: decoding every plan's JSON
            # was most of a pass's time at 1,000 rollouts.
            rows = session.execute(
                select(
                    RolloutRow.name,
                    col(RolloutRow.plan)["interval"].as_string(),
                    RolloutRow.checked_at,
                ).where(col(RolloutRow.status).in_([s.value for s in ACTIVE_STATUSES]))
            ).all()
        with self._lock:
            not_before = dict(self._not_before)
        due: list[tuple[str, timedelta, datetime | None]] = []
        for name, raw_interval, checked_at in rows:
            interval = _parse_interval(raw_interval)
            retry_at = not_before.get(name)
            if retry_at is not None and now < retry_at:
                continue
            if checked_at is None:
                due.append((name, interval, retry_at))
                continue
            try:
                due_at = checked_at + interval
            except OverflowError:  # a stored plan from before the limits: check it now
                due_at = checked_at
            if now >= due_at - timedelta(milliseconds=50):
                due.append((name, interval, max(due_at, retry_at) if retry_at else due_at))
        return due

    def _submit(self, key: str, task: Callable[[], None], *, slow: bool = False) -> bool:
        """Queue ``task`` unless one under ``key`` is queued or running already."""
        with self._lock:
            if key in self._in_flight:  # a slow check is never queued twice
                return False
            self._in_flight[key] = time.monotonic()

        def run() -> None:
            try:
                task()
            except Exception:  # tasks catch their own; this keeps the worker alive
                log.exception("scheduler task %s failed", key)
            finally:
                with self._lock:
                    self._in_flight.pop(key, None)

        self._lanes["slow" if slow else "fast"].queue.put(run)
        return True

    def _run_check(
        self, name: str, interval: timedelta, due_at: datetime | None, slot: datetime
    ) -> None:
        began = time.monotonic()
        deadline = began + check_deadline(interval).total_seconds()
        result = self.check(name, deadline=deadline, due_at=due_at, slot=slot)
        slow = (
            result.error is not None
            or any(r.outcome is Outcome.ERROR for r in result.readings)
            or time.monotonic() - began > SLOW_CHECK_SECONDS
        )
        with self._lock:
            if slow:
                self._slow.add(name)
            else:
                self._slow.discard(name)

    # -- one check -----------------------------------------------------------------

    def check(
        self,
        name: str,
        *,
        deadline: float | None = None,
        due_at: datetime | None = None,
        slot: datetime | None = None,
    ) -> CheckResult:
        """Load, read gates, decide, save: one rollout, one tick. Never raises: a check
        that fails is an error for this rollout alone.

        ``slot`` is the pass that queued the check: the next check is due one interval
        after it, not after this check's start, so the few milliseconds a check waits
        for a worker do not push every later check of the rollout to the next pass."""
        try:
            now = self._clock()  # once per check; the database's clock on PostgreSQL
        except Exception as exc:
            return self._failed(name, datetime.now(UTC), exc)
        if due_at is not None:
            with self._lock:
                self.lateness.append(max(0.0, (now - due_at).total_seconds()))
        on_time = slot is not None and now - slot <= timedelta(seconds=self._tick_seconds)
        try:
            result = self._check(name, now, deadline, slot if on_time else None)
        except Exception as exc:
            return self._failed(name, now, exc)
        with self._lock:
            self.checks += 1
        self._succeeded(name)
        return result

    def _check(
        self, name: str, now: datetime, deadline: float | None, slot: datetime | None
    ) -> CheckResult:
        try:
            state, row_version = self._load(name)
        except NotFound:
            return CheckResult(name, None, [], skipped="gone")
        if state.status not in ACTIVE_STATUSES:
            return CheckResult(name, None, [], skipped=f"{state.status}")
        if not self._leases.acquire(name):
            return CheckResult(name, None, [], skipped="lease held by another replica")
        if self._blockers:
            blocked = tuple(reason for blocker in self._blockers for reason in blocker(state, now))
            state = replace(state, blocked=state.blocked + blocked)
        readings = read_gates(self._gates, state, now, deadline)
        decision = decide(state, readings, now)
        try:
            self._rollouts.record_decision(
                name, row_version, decision, readings, now, checked_at=slot, loaded=state
            )
        except VersionConflict:
            # Someone acted while the gates were read: their change wins; check again next tick.
            log.info("rollout %s changed during its check; the tick is dropped", name)
            return CheckResult(name, None, readings, skipped="changed during check")
        if not isinstance(decision, Hold):
            log.info("rollout %s: %s: %s", name, type(decision).__name__, decision.reason)
        return CheckResult(name, decision, readings)

    def _load(self, name: str) -> tuple[RolloutState, int]:
        with self._store.read() as session:
            row = session.get(RolloutRow, name)
            if row is None:
                raise NotFound(name)
            return self._rollouts.state_of(row), row.row_version

    def _succeeded(self, name: str) -> None:
        with self._lock:
            failing = self._failing.pop(name, None)
            self._not_before.pop(name, None)
        if failing is not None:
            log.warning(
                "rollout %s: checks work again (failed %d time(s) since %s)",
                name,
                failing.streak,
                failing.since.isoformat(),
            )

    def _failed(self, name: str, now: datetime, exc: Exception) -> CheckResult:
        error = f"{type(exc).__name__}: {_first_line(exc)}"[:300]
        retry_after = self._retry_interval(name)
        with self._lock:
            failing = self._failing.get(name) or _Failing(since=now, streak=0, error=error)
            failing.streak += 1
            failing.error = error
            self._failing[name] = failing
            self.check_errors[name] = self.check_errors.get(name, 0) + 1
            self._not_before[name] = now + retry_after
        if failing.streak == 1:  # once per streak: a broken plan must not flood the log
            log.error("rollout %s: check failed (%s); others go on", name, error, exc_info=exc)
        # The database being away is not the rollout's fault: no pause for that.
        if failing.streak == FAILURES_BEFORE_PAUSE and not isinstance(exc, OperationalError):
            self._pause_broken(name, failing.streak, error, now)
        return CheckResult(name, None, [], error=error)

    def _retry_interval(self, name: str) -> timedelta:
        """A failed check is tried again after the rollout's interval, not every tick."""
        try:
            with self._store.read() as session:
                plan = session.execute(
                    select(RolloutRow.plan).where(col(RolloutRow.name) == name)
                ).scalar_one_or_none()
        except Exception:
            return timedelta(minutes=1)
        interval = _interval_of(plan) if isinstance(plan, Mapping) else timedelta(minutes=1)
        return min(interval, MAX_RETRY_INTERVAL)

    def _pause_broken(self, name: str, streak: int, error: str, now: datetime) -> None:
        """Make a rollout that cannot be checked visible: paused, with the error as the
        reason, as an audited transition. A person fixes the plan or aborts."""
        reason = f"gate check failed {streak} times in a row ({error}); fix the plan or abort"
        try:
            self._rollouts.act(name, Action.PAUSE, actor="controller", now=now, reason=reason)
        except Refused:
            pass  # paused already (by a person, or earlier): the metric and log say it
        except Exception as exc:
            log.error("rollout %s: could not pause after failed checks: %s", name, exc)
        else:
            log.warning("rollout %s paused: %s", name, reason)

    def _prune_soon(self, now: datetime) -> None:
        if self._last_pruned is not None and now - self._last_pruned < timedelta(minutes=10):
            return
        self._last_pruned = now
        # On a worker: a big delete must not hold up the pass.
        self._submit(_PRUNE, partial(self._prune, now), slow=True)

    def _prune(self, now: datetime) -> None:
        try:
            with self._store.write() as session:
                removed = gate_history.prune(session, now - self._retention)
        except Exception as exc:
            log.warning("pruning gate evaluations failed: %s", _first_line(exc))
            return
        if removed:
            log.info("pruned %d gate evaluations older than %s", removed, self._retention)


class _Lane:
    """A queue and the worker threads that drain it.

    ``workers`` threads are kept free for new checks: a thread busy on one check for
    longer than STUCK_SECONDS (a gate read that hangs until its timeout, say)
    no longer counts, and another is started in its place, up to ``max_threads``. So
    the first check of a rollout whose Prometheus hangs, before the lane knows to send
    it to the slow lane, holds one thread and not a healthy rollout's place in line.
    Spare threads end when their check does."""

    def __init__(self, name: str, workers: int, max_threads: int) -> None:
        self.name = name
        self.workers = workers
        self.max_threads = max(workers, max_threads)
        self.queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._busy: dict[threading.Thread, float] = {}  # thread -> its task's start
        self._spawned = 0

    def start(self) -> None:
        with self._lock:
            while len(self._threads) < self.workers:
                self._spawn()

    def top_up(self) -> None:
        """Start threads in place of stuck ones while checks wait (every pass)."""
        with self._lock:
            free = len(self._threads) - self._stuck()
            while (
                free < self.workers
                and len(self._threads) < self.max_threads
                and not self.queue.empty()
            ):
                self._spawn()
                free += 1

    def stop(self, end: float) -> None:
        """Ask every worker to finish; wait until ``end`` (monotonic) at most."""
        with self._lock:
            threads = list(self._threads)
        for _ in threads:
            self.queue.put(None)
        for thread in threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        # Tasks still queued are dropped: the next start (or replica) checks them again.
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                return

    def _spawn(self) -> None:  # with self._lock held
        self._spawned += 1
        thread = threading.Thread(
            target=self._work, name=f"scheduler-{self.name}-{self._spawned}", daemon=True
        )
        self._threads.add(thread)
        thread.start()

    def _stuck(self) -> int:  # with self._lock held
        now = time.monotonic()
        return sum(1 for began in self._busy.values() if now - began > STUCK_SECONDS)

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                task = self.queue.get()
                if task is None:
                    return
                with self._lock:
                    self._busy[me] = time.monotonic()
                task()  # tasks catch their own exceptions (Scheduler._submit)
                with self._lock:
                    del self._busy[me]
                    if len(self._threads) - self._stuck() > self.workers:
                        return  # a spare started while this one was stuck
        finally:
            with self._lock:
                self._threads.discard(me)


def _interval_of(plan: object) -> timedelta:
    return _parse_interval(plan.get("interval") if isinstance(plan, Mapping) else None)


def _parse_interval(raw: object) -> timedelta:
    """A stored plan's interval; a missing or unreadable one is the 1 m default."""
    raw = "1m" if raw is None or raw == "" else raw
    try:
        interval = parse_duration(raw if isinstance(raw, str | int | float) else "1m")
    except Exception:  # a stored plan may be anything; it must not break the pass
        return timedelta(minutes=1)
    return interval if interval > timedelta(0) else timedelta(minutes=1)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


__all__ = [
    "CheckResult",
    "Scheduler",
    "check_deadline",
]
