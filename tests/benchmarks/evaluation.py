"""Evaluation speed, in one run: in-process against peer SDKs, and over HTTP.

(a) In-process: 200,000 distinct users on a 5 % rollout flag, in nanoseconds per
evaluation (the median of several passes over all users, contenders interleaved so
that a noisy neighbour hurts them alike): a bare "dict lookup plus mmh3" function as
the floor; our Snapshot, FlagClient and OpenFeature provider; and the Python SDKs of
Unleash, flagd (in-process provider), GrowthBook and LaunchDarkly, set up offline with
the same flag (tests/benchmarks/peers.py), natively and through OpenFeature. Each is
checked to serve about 5 %; for flagd, how many users land on the same side as ours
is reported beside the chance figure (flagd-core 2 hashes CBOR, not the plain string).

(b) HTTP: wrk on loopback against a real ``rollout serve`` (SQLite, one uvicorn
worker) and, with the same uvicorn settings, the bare ASGI app in
tests/benchmarks/bare_asgi.py doing the same evaluation: native GET, OFREP single and
OFREP bulk, with a bearer token and a new targeting key per request
(tests/benchmarks/evaluation.lua); requests/s, p50, p99 and the ratio.

    python -m tests.benchmarks.evaluation [--only inprocess|http] [--write-docs]

``--write-docs`` replaces the "Evaluation speed" section of docs/benchmarks.md. Needs
the ``bench`` extra (peer SDKs) and wrk: ``make bench-eval`` installs both.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import mmh3

from flags.codec import snapshot_to_dict
from flags.model import EvaluationContext, Flag, FlagType, RolloutServing
from flags.sdk.client import FlagClient
from flags.snapshot import Snapshot
from tests.benchmarks.detection_latency import machine
from tests.benchmarks.docs_section import markers, replace_section
from tests.benchmarks.peers import KEY, PERCENT, Contender, openfeature_contender, peer_contenders
from tests.serving import free_port, plan_yaml, running_server, stop

ROOT = Path(__file__).resolve().parents[2]
LUA = Path(__file__).with_name("evaluation.lua")
START, END = markers("evaluation-speed")
PEER_PACKAGES = (
    "UnleashClient",
    "openfeature-provider-unleash",
    "openfeature-provider-flagd",
    "growthbook",
    "growthbook-openfeature-provider",
    "launchdarkly-server-sdk",
    "launchdarkly-openfeature-server",
    "openfeature-sdk",
    "mmh3",
)
# The goals, checked and printed with the numbers.
PEER_FACTOR = 10.0  # at least this many times faster than the fastest peer
FLOOR_FACTOR = 3.0  # within this many times the floor
HTTP_RATIO = 0.80  # of the bare app's throughput
HTTP_P99_MS = 15.0


# -- (a) in-process ------------------------------------------------------------


FLOOR_FLAGS = {KEY: (KEY, PERCENT * 100)}


def floor(key: str, targeting_key: str) -> bool:
    """The least any evaluation can do: find the flag, hash the user, compare."""
    salt, units = FLOOR_FLAGS[key]
    return ((mmh3.hash(salt + targeting_key, 0, False) * 10_000) >> 32) < units


def rollout_snapshot() -> Snapshot:
    """The flag as the controller serves it at canary 5 %."""
    serving = RolloutServing(KEY, "running", "canary", 3, PERCENT, frozenset(), True, "on", "off")
    flag = Flag(KEY, FlagType.BOOLEAN, {"on": True, "off": False}, "off", rollout=serving)
    return Snapshot(revision=1, flags={KEY: flag})


def our_contenders(stack: ExitStack, workdir: Path) -> list[Contender]:
    snapshot = rollout_snapshot()

    def run_floor(users: Sequence[str]) -> None:
        evaluate = floor
        for user in users:
            evaluate(KEY, user)

    def run_evaluate_key(users: Sequence[str]) -> None:
        evaluate = snapshot.evaluate_key
        for user in users:
            evaluate(KEY, user)

    def run_evaluate(users: Sequence[str]) -> None:
        evaluate = snapshot.evaluate
        for user in users:
            evaluate(KEY, EvaluationContext(user))

    bootstrap = workdir / "snapshot.json"
    bootstrap.write_text(json.dumps(snapshot_to_dict(snapshot)))
    # Offline: no poller thread, answers from the bootstrap file.
    client = FlagClient("http://127.0.0.1:9", "none", bootstrap_path=bootstrap, start=False)
    stack.callback(client.close)

    def run_client(users: Sequence[str]) -> None:
        value = client.boolean_value
        for user in users:
            value(KEY, False, EvaluationContext(user))

    def run_client_key(users: Sequence[str]) -> None:
        # What a service calls per request: evaluation plus the SDK's count for the report.
        evaluate = client.evaluate_key
        for user in users:
            evaluate(KEY, user)

    contenders = [
        Contender("floor: dict lookup + mmh3", "floor", False, run_floor, lambda u: floor(KEY, u)),
        Contender(
            "ours: Snapshot.evaluate_key",
            "ours",
            False,
            run_evaluate_key,
            lambda u: bool(snapshot.evaluate_key(KEY, u).value),
        ),
        Contender(
            "ours: Snapshot.evaluate(context)",
            "ours",
            False,
            run_evaluate,
            lambda u: bool(snapshot.evaluate(KEY, EvaluationContext(u)).value),
        ),
        Contender(
            "ours: FlagClient.evaluate_key (counted)",
            "ours",
            False,
            run_client_key,
            lambda u: bool(client.evaluate_key(KEY, u).value),
        ),
        Contender(
            "ours: FlagClient.boolean_value",
            "ours",
            False,
            run_client,
            lambda u: client.boolean_value(KEY, False, EvaluationContext(u)),
        ),
    ]
    from flags.sdk.openfeature import RolloutProvider

    provider = RolloutProvider(client, owns_client=False)
    contenders.append(openfeature_contender("ours via OpenFeature", "ours", provider, stack))
    return contenders


@dataclass(frozen=True)
class InProcessRow:
    contender: Contender
    ns: float  # median ns per evaluation
    on_share: float


def users_of(count: int) -> list[str]:
    """Distinct pseudonyms, as services send them: already hashed, opaque."""
    return [hashlib.sha256(f"user-{i}".encode()).hexdigest()[:20] for i in range(count)]


def time_pass(contender: Contender, users: Sequence[str]) -> float:
    gc.collect()
    started = time.perf_counter_ns()
    contender.run(users)
    return (time.perf_counter_ns() - started) / len(users)


def measure_in_process(
    users: Sequence[str], repeat: int, peer_repeat: int, progress: Callable[[str], None]
) -> tuple[list[InProcessRow], dict[str, str], list[str]]:
    checks: list[str] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        ours = our_contenders(stack, Path(tmp))
        peers, unavailable = stack.enter_context(peer_contenders())
        contenders = ours + peers
        sample = users[:20_000]
        shares = {c.name: sum(map(c.answer, sample)) / len(sample) for c in contenders}
        checks.extend(agreement(ours[0], [c for c in peers if c.name.startswith("flagd")], sample))
        for c in contenders:
            c.run(users[:5_000])  # warm up: caches, lazy imports, specialisation
        samples: dict[str, list[float]] = {c.name: [] for c in contenders}
        for rep in range(max(repeat, peer_repeat)):
            for c in contenders:
                if rep < (repeat if c.group != "peer" else peer_repeat):
                    samples[c.name].append(time_pass(c, users))
            progress(f"in-process pass {rep + 1} done")
        rows = [
            InProcessRow(c, statistics.median(samples[c.name]), shares[c.name]) for c in contenders
        ]
    return rows, unavailable, checks


def agreement(floor_c: Contender, flagd: list[Contender], users: Sequence[str]) -> list[str]:
    expected = [floor_c.answer(u) for u in users]
    # Informational: flagd-core 2 hashes a CBOR encoding of [flag key, targeting key]
    # rather than the plain concatenation older flagd versions hash, so its users are
    # independent of ours: agreement is then what chance gives, p^2 + (1 - p)^2.
    share = PERCENT / 100
    chance = share**2 + (1 - share) ** 2
    out = []
    for c in flagd:
        same = sum(a == b for a, b in zip(expected, map(c.answer, users), strict=True))
        out.append(
            f"{c.name} (openfeature-flagd-core "
            f"{importlib.metadata.version('openfeature-flagd-core')}) puts {same} of "
            f"{len(users)} users ({same / len(users):.1%}) on the same side as our bucketing; "
            f"independent bucketing would agree on {chance:.1%}"
        )
    return out


# -- (b) HTTP ------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


@dataclass(frozen=True)
class HttpRow:
    endpoint: str
    controller: WrkResult
    bare: WrkResult

    @property
    def ratio(self) -> float:
        return self.controller.rps / self.bare.rps if self.bare.rps else 0.0


ENDPOINTS = {
    "get": "native GET /api/v1/evaluate/{key}",
    "ofrep": "OFREP POST /ofrep/v1/evaluate/flags/{key}",
    "bulk": "OFREP POST /ofrep/v1/evaluate/flags (bulk)",
}


def wrk(url: str, mode: str, token: str, duration: float, connections: int) -> WrkResult:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        mode,
        KEY,
        token,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_RESULT "))
    data = json.loads(line.removeprefix("WRK_RESULT "))
    return WrkResult(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non_2xx=data["non_2xx"],
        socket_errors=data["socket_errors"],
    )


@contextmanager
def bare_server(snapshot_file: Path, workdir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "bare.log").open("wb")
    command = [sys.executable, "-m", "tests.benchmarks.bare_asgi", "--snapshot", str(snapshot_file)]
    process = subprocess.Popen(
        [*command, "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/api/v1/evaluate/{KEY}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare app did not start: {(workdir / 'bare.log').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        stop(process)
        log.close()


def measure_http(
    duration: float, connections: int, rounds: int, progress: Callable[[str], None]
) -> list[HttpRow]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench-eval` installs it (Debian: wrk)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as server:
        with server.client() as admin:
            admin.post("/api/v1/plans", json={"yaml": plan_yaml(KEY)}).raise_for_status()
            admin.post(f"/api/v1/rollouts/{KEY}/actions/start", json={}).raise_for_status()
            advanced = admin.post(f"/api/v1/rollouts/{KEY}/actions/advance", json={})
            assert advanced.json()["serving"]["percent"] == PERCENT, advanced.text
        token = server.token("sdk")
        with server.client(token=token) as sdk:
            snapshot_file = Path(tmp) / "snapshot.json"
            snapshot_file.write_text(sdk.get("/api/v1/snapshot").text)
        with bare_server(snapshot_file, Path(tmp)) as bare_url:
            urls = {"controller": server.url, "bare": bare_url}
            for mode, endpoint in ENDPOINTS.items():
                runs: dict[str, list[WrkResult]] = {"controller": [], "bare": []}
                for url in urls.values():
                    wrk(url, mode, token, min(2.0, duration), connections)  # warm up
                # Short runs in alternating order, the median of each side: one long run
                # each is at the mercy of whatever else the machine did in those seconds.
                for n in range(rounds):
                    for name in sorted(urls, reverse=n % 2 == 0):
                        runs[name].append(wrk(urls[name], mode, token, duration, connections))
                rows.append(
                    HttpRow(endpoint, median_run(runs["controller"]), median_run(runs["bare"]))
                )
                progress(f"HTTP {endpoint} done")
    return rows


def median_run(runs: list[WrkResult]) -> WrkResult:
    """The run with the median throughput (the upper one of an even count)."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


# -- report --------------------------------------------------------------------


def serves_the_flag(row: InProcessRow) -> bool:
    """About 5 % on, as a 5 % rollout must: anything else is a broken setup, not a speed."""
    return abs(row.on_share - PERCENT / 100) < 0.01


def in_process_table(rows: list[InProcessRow]) -> list[str]:
    floor_ns = next(r.ns for r in rows if r.contender.group == "floor")
    peers = [r.ns for r in rows if r.contender.group == "peer" and not r.contender.via_openfeature]
    fastest_peer = min(peers) if peers else float("nan")
    lines = [
        "| contender | ns per evaluation (median) | x floor | fastest native peer / this "
        "| served on |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f"{r.on_share:.2%}" + ("" if serves_the_flag(r) else " (wrong!)")
        lines.append(
            f"| {r.contender.name} | {r.ns:,.0f} | {r.ns / floor_ns:.2f} "
            f"| {fastest_peer / r.ns:.2f} | {share} |"
        )
    return lines


def in_process_verdicts(rows: list[InProcessRow]) -> list[str]:
    by_name = {r.contender.name: r for r in rows}
    ours = by_name["ours: Snapshot.evaluate_key"].ns
    floor_ns = by_name["floor: dict lookup + mmh3"].ns
    peers = [r for r in rows if r.contender.group == "peer" and serves_the_flag(r)]
    native = [r for r in peers if not r.contender.via_openfeature]
    of_peers = [r for r in peers if r.contender.via_openfeature]
    within = ours <= FLOOR_FACTOR * floor_ns
    sdk = by_name["ours: FlagClient.evaluate_key (counted)"].ns
    verdicts = [
        f"ours (Snapshot.evaluate_key) is {ours / floor_ns:.2f} x the floor "
        f"(goal: within {FLOOR_FACTOR:g} x): {'met' if within else 'NOT met'}",
        f"the SDK's per-request call (FlagClient.evaluate_key, counting included) is "
        f"{sdk / floor_ns:.2f} x the floor: "
        f"{'within' if sdk <= FLOOR_FACTOR * floor_ns else 'NOT within'} {FLOOR_FACTOR:g} x",
    ]
    if native:
        best = min(native, key=lambda r: r.ns)
        verdicts.append(
            f"the fastest native peer ({best.contender.name}) takes {best.ns / ours:.1f} x as "
            f"long as ours (goal: at least {PEER_FACTOR:g} x): "
            f"{'met' if best.ns >= PEER_FACTOR * ours else 'NOT met'}"
        )
    our_row = by_name["ours via OpenFeature"]
    if of_peers and serves_the_flag(our_row):
        our_of = our_row.ns
        best_of = min(of_peers, key=lambda r: r.ns)
        verdicts.append(
            f"through OpenFeature, ours takes {our_of:,.0f} ns, the fastest peer "
            f"({best_of.contender.name}) {best_of.ns:,.0f} ns (goal: faster than every peer): "
            f"{'met' if our_of < best_of.ns else 'NOT met'}"
        )
    return verdicts


def http_table(rows: list[HttpRow]) -> list[str]:
    lines = [
        "| endpoint | server | requests/s | p50 ms | p99 ms | non-2xx | controller / bare |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for name, w in (("rollout serve", r.controller), ("bare ASGI", r.bare)):
            ratio = f"{r.ratio:.0%}" if w is r.controller else ""
            lines.append(
                f"| {r.endpoint} | {name} | {w.rps:,.0f} | {w.p50_ms:.2f} | {w.p99_ms:.2f} "
                f"| {w.non_2xx + w.socket_errors} | {ratio} |"
            )
    return lines


def http_verdicts(rows: list[HttpRow]) -> list[str]:
    out = []
    for r in rows:
        ok = r.ratio >= HTTP_RATIO and r.controller.p99_ms < HTTP_P99_MS
        ok = ok and r.controller.non_2xx == 0 and r.controller.socket_errors == 0
        out.append(
            f"{r.endpoint}: {r.ratio:.0%} of the bare app's throughput, p99 "
            f"{r.controller.p99_ms:.1f} ms (goal: at least {HTTP_RATIO:.0%}, p99 under "
            f"{HTTP_P99_MS:g} ms, no errors): {'met' if ok else 'NOT met'}"
        )
    return out


def versions() -> str:
    found = []
    for package in PEER_PACKAGES:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def server_stack() -> str:
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    uvicorn = importlib.metadata.version("uvicorn")
    return f"uvicorn {uvicorn} ({http}, {loop} loop), 1 worker, access log off"


def section(
    args: argparse.Namespace,
    in_process: tuple[list[InProcessRow], dict[str, str], list[str]] | None,
    http: list[HttpRow] | None,
) -> str:
    host = machine()
    lines = [
        START,
        "## Evaluation speed",
        "",
        f"Measured {host['date']} with `python -m tests.benchmarks.evaluation --write-docs` "
        f"(`make bench-eval`) on {host['nproc']} CPUs ({host['cpu']}), "
        f"Python {host['python']}.",
        "",
    ]
    if in_process is not None:
        rows, unavailable, checks = in_process
        lines += [
            "### In-process",
            "",
            f"{args.users:,} distinct users (hashed pseudonyms) on a {PERCENT} % rollout flag; "
            f"each figure is the median of {args.repeat} passes over all users "
            f"({args.peer_repeat} for the peers), contenders interleaved; the loop's own "
            "cost is in every figure. Peers run offline (flags from a dict or file, no "
            "network, metrics and events off), natively and through their OpenFeature "
            "provider, each with the same flag.",
            "",
            *in_process_table(rows),
            "",
            *(f"- {v}" for v in in_process_verdicts(rows)),
            *(f"- {c}" for c in checks),
            *(f"- {name}: unavailable ({why})" for name, why in unavailable.items()),
            "",
            f"Versions: {versions()}.",
            "",
        ]
    if http is not None:
        lines += [
            "### Over HTTP",
            "",
            f"wrk on loopback, 1 thread, {args.connections} connections, {args.rounds} runs of "
            f"{args.duration:g} s per server and endpoint after a warm-up, alternating between "
            "the two servers; each row is its median run. A bearer token and a new "
            "targeting key on every request "
            "(tests/benchmarks/evaluation.lua). `rollout serve` (SQLite) against the bare "
            "ASGI app of tests/benchmarks/bare_asgi.py (no framework, no auth, no counting; "
            "the same parsing, evaluation, JSON and cache of rendered answers), both on "
            f"{server_stack()}. wrk shares the machine's cores with the server, so runs "
            "vary by a few per cent either way.",
            "",
            *http_table(http),
            "",
            *(f"- {v}" for v in http_verdicts(http)),
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=("inprocess", "http"))
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7, help="passes for ours and the floor")
    parser.add_argument("--peer-repeat", type=int, default=3, help="passes for each peer")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="wrk runs per server and endpoint")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    in_process = None
    if args.only != "http":
        in_process = measure_in_process(
            users_of(args.users), args.repeat, args.peer_repeat, progress
        )
    http = None
    if args.only != "inprocess":
        http = measure_http(args.duration, args.connections, args.rounds, progress)
    text = section(args, in_process, http)
    print(text)
    if args.write_docs:
        replace_section("evaluation-speed", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
