"""The bake's holdout keeps the same users on the old side for the whole bake, on SQLite
and PostgreSQL, through the real path: the stored row, its mapping to the core state,
``serving``, the snapshot's overlay and the compiled evaluation of ``flags``.

Time is passed in: the rollout is moved with ``decide`` and ``record_decision`` at
chosen instants, so a seven-day bake takes no time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.rollouts import Rollouts, parse_plan_input
from controller.snapshots import SnapshotHolder
from controller.storage.mapping import state_from_row
from controller.storage.store import Store
from controller.storage.tables import RolloutRow
from flags.bucketing import bucket
from stages.actions import Action
from stages.decide import decide
from stages.decisions import BeginBake, Complete, Hold

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NAME = "memory-layer"
PLAN = f"""
rollout: {NAME}
flag: {NAME}
salt: {NAME}-v2
bake: 7d
holdout: 1
steps:
  - {{stage: canary, percent: 5, hold: 1h}}
  - {{stage: regional, regions: [us-west-1], hold: 1h}}
  - {{stage: full, hold: 1h}}
"""
USERS = [f"user-{i}" for i in range(20_000)]


def tick(store: Store, rollouts: Rollouts, now: datetime) -> object:
    with store.read() as session:
        row = session.get(RolloutRow, NAME)
        assert row is not None
        state, row_version = state_from_row(row), row.row_version
    decision = decide(state, [], now)
    rollouts.record_decision(NAME, row_version, decision, [], now)
    return decision


def new_side(holder: SnapshotHolder) -> tuple[set[str], set[str]]:
    """The users who get the new side, without a region and in the released region."""
    snapshot = holder.current
    plain = {u for u in USERS if snapshot.evaluate_key(NAME, u).variant == "on"}
    regional = {
        u
        for u in USERS[:5000]
        if snapshot.evaluate_key(NAME, u, {"region": "us-west-1"}).variant == "on"
    }
    return plain, regional


def test_the_holdout_is_the_same_users_from_start_to_end_of_the_bake(store: Store) -> None:
    holder = SnapshotHolder(store)
    rollouts = Rollouts(store, on_change=holder.refresh)
    plan, source = parse_plan_input(PLAN, None)
    rollouts.apply(plan, source, "test", T0)
    rollouts.act(NAME, Action.START, actor="test", now=T0)
    hour = timedelta(hours=1)
    for n in (1, 2):  # canary, then regional: their dwells elapse, a timed ramp advances
        assert type(tick(store, rollouts, T0 + n * hour)).__name__ == "Advance"
    before_bake, _ = new_side(holder)
    assert before_bake == set(USERS)  # full: everyone

    start = T0 + 3 * hour
    assert isinstance(tick(store, rollouts, start), BeginBake)
    at_start, regional_at_start = new_side(holder)
    holdout = {u for u in USERS if bucket(f"{NAME}-v2", u) >= 9900}
    # The holdout is the top 1 % of buckets, the users a 99 % step leaves out; a
    # released region does not let them through.
    assert at_start == set(USERS) - holdout
    assert regional_at_start == set(USERS[:5000]) - holdout
    assert 150 < len(holdout) < 250  # about 1 % of 20,000

    view = rollouts.get(NAME, start + timedelta(days=2, hours=3))
    assert (view["status"], view["serving"]["percent"]) == ("running", 99)
    assert view["bake"]["summary"] == "baking, 4d 21h left, holdout 1 %"
    assert view["bake"]["ends_at"] == (start + timedelta(days=7)).isoformat()

    end = start + timedelta(days=7) - timedelta(seconds=1)
    assert isinstance(tick(store, rollouts, end), Hold)
    holder.refresh()
    at_end, regional_at_end = new_side(holder)
    assert not (holdout & at_end)  # none of the holdout got the new side
    assert at_start <= at_end  # none of the others lost it
    assert (at_end, regional_at_end) == (at_start, regional_at_start)

    assert isinstance(tick(store, rollouts, start + timedelta(days=7)), Complete)
    released, _ = new_side(holder)
    assert released == set(USERS)  # the holdout released: everyone new
    done = rollouts.get(NAME, start + timedelta(days=7))
    assert (done["status"], done["bake"], done["serving"]["percent"]) == ("completed", None, 100)
    assert "holdout of 1 % released" in done["reason"]
