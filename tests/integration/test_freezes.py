"""Freezes on a real database (SQLite and PostgreSQL), with the scheduler's shell, a fake
gate source and a clock the test moves: a freeze holds advances in its scope and says
why, never a rollback, abort or the kill switch; it ends by unfreeze or at its time,
and each create, end and expiry is one audit event."""

from __future__ import annotations

import pytest
from sqlmodel import col, func, select

from controller.errors import Conflict, Invalid, NotFound, Refused
from controller.flagstore import Flags
from controller.freezes import Freezes
from controller.jobs.scheduler import Scheduler
from controller.notify.config import WebhookConfig
from controller.notify.webhooks import Outbox
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.leases import Leases
from controller.storage.store import Store
from controller.storage.tables import AuditRow, FreezeRow, RolloutRow, WebhookOutboxRow
from stages.actions import Action
from stages.state import Outcome
from tests.integration.test_scheduler import GATED_PLAN, Clock, FakeGates, run, tick

ALICE = "alice (operator)"
ADMIN = "root (admin)"

MEMORY_PLAN = """
rollout: memory-layer
flag: memory-layer
interval: 5s
labels: {team: memory, environment: production}
steps:
  - {stage: canary, percent: 1, hold: 5s}
  - {stage: canary, percent: 2, hold: 5s}
  - {stage: full, approval: true}
"""
SEARCH_PLAN = MEMORY_PLAN.replace("memory-layer", "search").replace("team: memory", "team: search")


class World:
    def __init__(self, store: Store, *plans: str, gates: FakeGates | None = None) -> None:
        self.store = store
        self.clock = Clock()
        self.rollouts = Rollouts(store, lambda: None)
        self.freezes = Freezes(store)
        self.gates = gates or FakeGates()
        for text in plans:
            plan, source = parse_plan_input(text, None)
            self.rollouts.apply(plan, source, "test", self.clock())
            self.rollouts.act(plan.rollout, Action.START, actor="test", now=self.clock())
        self.scheduler = self.replica("r1")

    def replica(self, holder: str) -> Scheduler:
        return Scheduler(
            self.store,
            self.rollouts,
            self.gates,
            Leases(self.store, holder),
            self.clock,
            blockers=(self.freezes.blocking,),
            on_pass=[self.freezes.expire],
        )

    def freeze(self, until: str = "1h", *scope: str, reason: str = "INC-123") -> int:
        made = self.freezes.create(
            reason=reason, until=until, scope=scope, tz=None, actor=ALICE, now=self.clock()
        )
        return int(made["id"])

    def row(self, name: str) -> RolloutRow:
        with self.store.read() as s:
            row = s.get(RolloutRow, name)
            assert row is not None
            return row

    def events(self, action: str) -> list[AuditRow]:
        with self.store.read() as s:
            query = select(AuditRow).where(col(AuditRow.action) == action)
            return list(s.execute(query.order_by(col(AuditRow.id))).scalars())


def test_a_freeze_holds_a_ready_advance_and_says_why_then_unfreeze_lets_it_go(
    store: Store,
) -> None:
    world = World(store, MEMORY_PLAN)
    fid = world.freeze("2h")
    run(world.scheduler, world.clock, 12)

    row = world.row("memory-layer")
    assert row.step == 0 and row.status == "running"
    assert row.reason.startswith("ready to advance, but frozen: INC-123 until ")
    assert row.reason.endswith(" UTC by alice")
    assert world.rollouts.get("memory-layer", world.clock())["frozen_by"][0]["id"] == fid

    world.freezes.end(fid, actor=ALICE, now=world.clock())
    run(world.scheduler, world.clock, 6)
    assert world.row("memory-layer").step == 1
    assert world.rollouts.get("memory-layer", world.clock())["frozen_by"] == []
    [made] = world.events("freeze")
    [ended] = world.events("unfreeze")
    assert made.actor == ALICE and made.details["rollouts"] == ["memory-layer"]
    assert f"freeze {fid}: INC-123 until " in made.reason
    assert ended.details == {"freeze": fid, "rollouts": ["memory-layer"]}


def test_a_scope_holds_only_the_rollouts_whose_labels_match(store: Store) -> None:
    world = World(store, MEMORY_PLAN, SEARCH_PLAN)
    world.freeze("1h", "team=memory")
    run(world.scheduler, world.clock, 12)

    assert world.row("memory-layer").step == 0
    assert world.row("search").step >= 1
    listed = world.freezes.listing(world.clock())
    assert [f["rollouts"] for f in listed] == [["memory-layer"]]


def test_rollout_scope_holds_that_rollout_only(store: Store) -> None:
    world = World(store, MEMORY_PLAN, SEARCH_PLAN)
    world.freeze("1h", "rollout=search")
    run(world.scheduler, world.clock, 12)

    assert world.row("search").step == 0
    assert world.row("memory-layer").step >= 1


def test_a_freeze_stops_the_move_into_awaiting_approval_and_the_approval(store: Store) -> None:
    world = World(store, MEMORY_PLAN)
    run(world.scheduler, world.clock, 7)
    assert world.row("memory-layer").step == 1
    fid = world.freeze("1h")
    run(world.scheduler, world.clock, 12)
    assert world.row("memory-layer").status == "running"  # not awaiting_approval

    world.freezes.end(fid, actor=ALICE, now=world.clock())
    run(world.scheduler, world.clock, 6)
    assert world.row("memory-layer").status == "awaiting_approval"
    world.freeze("1h", "team=memory", reason="INC-124")
    with pytest.raises(Refused) as refused:
        world.rollouts.act("memory-layer", Action.APPROVE, actor=ALICE, now=world.clock())
    assert "INC-124" in refused.value.message and "freeze 2" in refused.value.message
    assert world.row("memory-layer").status == "awaiting_approval"
    approved = world.rollouts.act(
        "memory-layer", Action.APPROVE, actor=ADMIN, now=world.clock(), force=True, admin=True
    )
    assert approved["step"] == 2 and "forced past freeze 2" in approved["reason"]


def test_expiry_ends_the_hold_at_until_and_is_audited_once_across_replicas(
    store: Store,
) -> None:
    world = World(store, MEMORY_PLAN)
    fid = world.freeze("20s")
    other = world.replica("r2")
    run(world.scheduler, world.clock, 12)
    assert world.row("memory-layer").step == 0

    world.clock.advance(9)  # 21 s: past until, before any pass has looked
    assert world.freezes.active(world.clock()) == []  # blocks nothing, unrecorded yet
    assert world.events("freeze.expire") == []
    tick(other)
    tick(world.scheduler)
    tick(other)
    assert world.row("memory-layer").step == 1
    [expired] = world.events("freeze.expire")
    assert expired.actor == "controller" and expired.details["freeze"] == fid
    with store.read() as s:
        row = s.get(FreezeRow, fid)
        assert row is not None and row.end_reason == "expired"
        assert row.ended_at == row.until  # ended at its time, not when it was noticed
    with pytest.raises(Conflict):
        world.freezes.end(fid, actor=ALICE, now=world.clock())


def test_a_rollback_still_happens_while_frozen(store: Store) -> None:
    gates = FakeGates()
    world = World(store, GATED_PLAN, gates=gates)
    for _ in range(20):  # until shadow is done: canary 5 %
        run(world.scheduler, world.clock, 5, step=5)
        if world.row("gated").step == 1:
            break
    assert world.row("gated").step == 1
    world.freeze("1h")
    gates.outcome = Outcome.ROLLBACK
    run(world.scheduler, world.clock, 10, step=5)

    row = world.row("gated")
    # Stepping back into shadow ends rolled back: the freeze held none of it.
    assert row.status == "rolled_back" and row.step == 0
    assert [e.actor for e in world.events("rollback")] == ["controller"]


def test_abort_and_the_kill_switch_act_while_frozen(store: Store) -> None:
    world = World(store, MEMORY_PLAN, SEARCH_PLAN)
    world.freeze("1h")
    flags = Flags(store, lambda: None, rollouts=world.rollouts)
    flags.set_enabled(
        "search", False, actor=ALICE, now=world.clock(), reason="bad", expected_version=None
    )
    world.rollouts.act("memory-layer", Action.ABORT, actor=ALICE, now=world.clock())

    assert world.row("search").status == "paused"
    assert world.row("memory-layer").status == "aborted"
    # Finished: nothing left to hold, so no longer shown as frozen.
    assert world.rollouts.get("memory-layer", world.clock())["frozen_by"] == []
    assert world.freezes.listing(world.clock())[0]["rollouts"] == ["search"]


def test_a_manual_advance_is_refused_naming_the_freeze_and_an_admin_may_force_it(
    store: Store,
) -> None:
    world = World(store, MEMORY_PLAN)
    fid = world.freeze("1h", "environment=production")

    with pytest.raises(Refused) as refused:
        world.rollouts.act("memory-layer", Action.ADVANCE, actor=ALICE, now=world.clock())
    assert f"freeze {fid} (frozen: INC-123 until" in refused.value.message
    with pytest.raises(Refused):  # an operator's force is not enough
        world.rollouts.act(
            "memory-layer", Action.ADVANCE, actor=ALICE, now=world.clock(), force=True
        )
    assert world.row("memory-layer").step == 0

    done = world.rollouts.act(
        "memory-layer",
        Action.ADVANCE,
        actor=ADMIN,
        now=world.clock(),
        reason="hotfix",
        force=True,
        admin=True,
    )
    assert done["step"] == 1 and done["frozen_by"][0]["id"] == fid
    [forced] = [e for e in world.events("advance") if e.actor == ADMIN]
    assert forced.reason.startswith(f"hotfix (forced past freeze {fid} (frozen: INC-123")
    assert forced.details["overrode_freezes"] == [fid]


BAD_INPUT = [
    ("until in the past", {"until": "2000-01-01T00:00:00Z"}, {"body.until"}),
    ("unknown scope syntax", {"scope": ["team"]}, {"body.scope[0]"}),
    ("missing reason", {"reason": "  "}, {"body.reason"}),
    ("unknown zone", {"tz": "Nowhere/City"}, {"body.tz"}),
    ("everything at once", {"reason": "", "until": "x", "scope": ["a"]}, {
        "body.reason", "body.until", "body.scope[0]",
    }),
]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "fields"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_names_each_field_and_writes_nothing(
    store: Store, given: dict[str, object], fields: set[str]
) -> None:
    world = World(store)
    body: dict[str, object] = {"reason": "INC-1", "until": "1h", "scope": [], "tz": None, **given}
    with pytest.raises(Invalid) as caught:
        world.freezes.create(actor=ALICE, now=world.clock(), **body)  # type: ignore[arg-type]

    assert {str(p["field"]) for p in caught.value.problems} == fields
    with store.read() as s:
        assert s.execute(select(func.count()).select_from(FreezeRow)).scalar_one() == 0
    assert world.events("freeze") == []


def test_unfreeze_of_an_unknown_freeze_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        World(store).freezes.end(99, actor=ALICE, now=Clock()())


def test_the_list_keeps_ended_freezes_when_asked(store: Store) -> None:
    world = World(store, MEMORY_PLAN)
    first = world.freeze("1h")
    world.freeze("10s", reason="INC-9")
    world.freezes.end(first, actor=ALICE, now=world.clock())
    world.clock.advance(11)

    assert world.freezes.listing(world.clock()) == []
    ended = world.freezes.listing(world.clock(), include_ended=True)
    assert [(f["id"], f["end_reason"], f["active"]) for f in ended] == [
        (2, "expired", False),
        (1, "unfrozen", False),
    ]


def test_each_freeze_event_is_sent_to_the_webhooks_that_want_it(store: Store) -> None:
    hooks = [
        WebhookConfig(name="ops", url="http://127.0.0.1:9/ops"),  # type: ignore[arg-type]
        WebhookConfig(name="chat", url="http://127.0.0.1:9/chat", format="slack"),  # type: ignore[arg-type]
        WebhookConfig(name="alarm", url="http://127.0.0.1:9/alarm", events=["rollback"]),  # type: ignore[arg-type]
    ]
    world = World(store, MEMORY_PLAN)
    outbox = Outbox(store, hooks, public_url="https://rollouts.example", max_attempts=3)
    world.freezes.notify = outbox.enqueue_notice
    first = world.freeze("1h", "team=memory")
    world.freeze("10s", reason="INC-9")
    world.freezes.end(first, actor=ALICE, now=world.clock())
    world.clock.advance(11)
    world.freezes.expire(world.clock())

    with store.read() as s:
        rows = list(
            s.execute(select(WebhookOutboxRow).order_by(col(WebhookOutboxRow.id))).scalars()
        )
    ops = [r.payload for r in rows if r.webhook == "ops"]
    assert [p["event"] for p in ops] == ["freeze", "freeze", "unfreeze", "freeze.expire"]
    assert ops[0]["freeze"]["scope"] == {"team": "memory"}
    assert ops[0]["rollouts"] == ["memory-layer"] and ops[0]["actor"] == ALICE
    assert ops[0]["url"] == "https://rollouts.example/ui/freezes"
    assert ops[3]["freeze"]["end_reason"] == "expired" and ops[3]["actor"] == "controller"
    chat = [r.payload["text"] for r in rows if r.webhook == "chat"]
    assert chat[0].startswith(":ice_cube: Freeze: freeze 1: INC-123 until ")
    assert chat[2] == ":sunny: Unfrozen: freeze 1 ended: INC-123"
    assert not [r for r in rows if r.webhook == "alarm"]
    assert {r.audit_id for r in rows if r.webhook == "ops"} == {
        e.id for e in world.events("freeze")
    } | {e.id for e in world.events("unfreeze") + world.events("freeze.expire")}
