"""Human-readable output of the ``rollout`` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}{_rest(seconds % size, size)}"
    return f"{seconds}s"


def _rest(remainder: int, size: int) -> str:
    smaller = {86400: ("h", 3600), 3600: ("m", 60), 60: ("s", 1)}[size]
    value = remainder // smaller[1]
    return f"{value}{smaller[0]}" if value else ""


def serving_text(serving: dict[str, Any]) -> str:
    if serving.get("kill_switch"):
        return "0% (kill switch: the flag is disabled, everyone gets its default)"
    if serving["step"] < 0:
        return "old to everyone (no dual-write)"
    parts = [f"{serving['percent']:g}%"]
    if serving["regions"]:
        parts.append("+ regions " + ",".join(serving["regions"]))
    parts.append("dual-write on" if serving["shadow"] else "dual-write off")
    return " ".join(parts)


def gates_text(outcomes: dict[str, str]) -> str:
    return " ".join(f"{g}={o}" for g, o in sorted(outcomes.items())) or "-"


def rollout_table(rollouts: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["name"],
            r["flag"],
            status_text(r) + (" (frozen)" if r.get("frozen_by") else ""),
            f"{r['step'] + 1}/{r['step_count']} {r['step_label']}",
            serving_text(r["serving"]),
            duration(r["seconds_in_step"]),
            gates_text(r["last_outcomes"]),
            labels_text(r["plan"].get("labels") or {}),
        ]
        for r in rollouts
    ]
    headers = ["rollout", "flag", "status", "step", "serving", "in step", "gates", "labels"]
    return table(headers, rows)


def labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def rollout_detail(r: dict[str, Any], latest: list[dict[str, Any]] | None = None) -> str:
    """The rollout, and with ``latest`` (the newest evaluation of each gate) a line per
    gate saying what it read."""
    lines = [
        f"rollout/{r['name']}  (flag {r['flag']}, version {r['version']})",
        f"  status:   {r['status']}"
        + (f", {r['bake']['summary']}" if r.get("bake") else "")
        + (f"  ({reason})" if (reason := _reason_text(r)) else ""),
        f"  step:     {r['step'] + 1} of {r['step_count']}: {r['step_label']}",
        *bake_lines(r),
        f"  serving:  {serving_text(r['serving'])}",
        f"  in step:  {duration(r['seconds_in_step'])}"
        + (
            f", {'completes' if r.get('bake') else 'may advance'} in "
            f"{duration(r['seconds_until_may_advance'])}{'' if r.get('bake') else _counted(r)}"
            if r["seconds_until_may_advance"] is not None
            else ""
        ),
        f"  gates:    {gates_text(r['last_outcomes'])}",
        f"  labels:   {labels_text(r['plan'].get('labels') or {})}",
    ]
    if r.get("window"):
        lines.append(f"  window:   {window_text(r['window'])}")
    lines += [f"  FROZEN:   freeze {f['id']}: {f['sentence']}" for f in r.get("frozen_by", [])]
    if latest:
        observed = observe_only_gates(r["plan"])
        lines.append("  readings:")
        lines += [f"    {reading_text(g, g['gate'] in observed, r['step'])}" for g in latest]
    lines.append("  plan:")
    for i, step in enumerate(r["plan"]["steps"]):
        marker = "->" if i == r["step"] and not r.get("bake") else "  "
        lines.append(f"   {marker} {i + 1:>2}. {_step_text(step)}")
    if r["plan"].get("bake"):
        marker = "->" if r.get("bake") else "  "
        holdout = r["plan"].get("holdout")
        held = f", holdout {holdout:g} %" if holdout is not None else ""
        lines.append(f"   {marker}     bake {r['plan']['bake']}{held}, then completed")
    return "\n".join(lines)


def _reason_text(r: dict[str, Any]) -> str:
    # In a bake the reason begins with the bake's own words, which the status line
    # already says (as of now, not of the last check): keep only what follows them.
    reason = str(r["reason"])
    if r.get("bake") and reason.startswith("baking, "):
        return reason.partition("; ")[2]
    return reason


def status_text(r: dict[str, Any]) -> str:
    """The status, and in a bake how long is left: ``running (baking, 5d 3h left, ...)``."""
    bake = r.get("bake")
    return f"{r['status']} ({bake['summary']})" if bake else str(r["status"])


def bake_lines(r: dict[str, Any]) -> list[str]:
    bake = r.get("bake")
    if not bake:
        return []
    holdout = bake["holdout_percent"]
    held = f", {holdout:g} % of users held out on the old side" if holdout is not None else ""
    return [f"  bake:     ends {bake['ends_at']}{held}"]


def _counted(r: dict[str, Any]) -> str:
    plan = r["plan"]
    dwell = plan["steps"][r["step"]].get("dwell") or plan.get("dwell", "always")
    return " of time inside change windows" if dwell == "in_window" else ""


def window_text(window: dict[str, Any]) -> str:
    """``outside change window, next opens Mon 09:00 Europe/Berlin``, or when it closes."""
    if not window["open"]:
        return str(window["message"])
    if window["next_close"] is None:
        return "open (no close in the next two weeks)"
    return f"open, closes {_utc_minute(window['next_close'])}"


def _utc_minute(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%a %Y-%m-%d %H:%M UTC")


def observe_only_gates(plan: dict[str, Any]) -> set[str]:
    """The gates of a plan (its own and its steps') in ``mode: observe``."""
    gates = [
        *plan.get("gates", []),
        *(g for s in plan.get("steps", []) for g in s.get("gates", [])),
    ]
    return {g["name"] for g in gates if g.get("mode") == "observe"}


_WOULD_ACT = ("hold", "rollback", "abort")


def reading_text(g: dict[str, Any], observe_only: bool, current_step: int) -> str:
    """``errors-vs-old: hold: new 0.42 % vs old 0.18 % errors, ...``: a compare reading
    as its one sentence, a threshold reading as value against threshold."""
    outcome = g["outcome"]
    if observe_only:
        outcome = (
            f"observe only: would {outcome}"
            if outcome in _WOULD_ACT
            else f"observe only, {outcome}"
        )
    where = "" if g.get("step") in (None, current_step) else f" (step {g['step'] + 1})"
    return f"{g['gate']}{where}: {outcome}: {why_text(g)}"


def why_text(g: dict[str, Any]) -> str:
    compare = g.get("compare")
    if compare:
        return str(compare["sentence"])
    if g.get("error"):
        return f"{'no data' if g['outcome'] == 'no_data' else 'error'}: {g['error']}"
    if g["outcome"] == "no_data":
        return "no data"
    value = _number(g.get("value"))
    if g.get("baseline") is not None:
        value += f" (baseline {_number(g['baseline'])})"
    if g.get("threshold") and g.get("threshold_value") is not None:
        sign = "<" if g["threshold"].endswith("_below") else ">"
        return f"{value} {sign} {g['threshold']} {g['threshold_value']:g}"
    return value


def _step_text(step: dict[str, Any]) -> str:
    parts = [step["stage"]]
    if step.get("percent") is not None and step["stage"] in ("canary", "graduated"):
        parts.append(f"{step['percent']:g}%")
    if step.get("regions"):
        parts.append(",".join(step["regions"]))
    if step.get("hold") and step["hold"] != "0s":
        parts.append(f"hold {step['hold']}")
    if step.get("approval"):
        parts.append("needs approval")
    if step.get("shadow") is False:
        parts.append("dual-write off")
    if step.get("on_rollback") == "pause":
        parts.append("on rollback: pause")
    return " ".join(parts)


def evaluation_text(e: dict[str, Any]) -> str:
    value = json.dumps(e.get("value"))
    line = f"{e['key']} = {value}  variant={e.get('variant')} reason={e['reason']}"
    if e.get("errorCode"):
        line += f" error={e['errorCode']}"
    rollout = e.get("rollout")
    if e.get("reason") == "DISABLED":
        line += "\n  kill switch: the flag is disabled, everyone gets its default"
    elif rollout:
        line += (
            f"\n  rollout {rollout['name']}: {rollout['status']}, {rollout['stage']} "
            f"{rollout['percent']:g}%, dual-write {'on' if rollout['shadow'] else 'off'}"
        )
    return line


def audit_table(events: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(e["id"]),
            e["at"][:19].replace("T", " "),
            e["actor"],
            e["action"],
            e["rollout"] or e["flag"] or "-",
            _move(e),
            e["reason"],
        ]
        for e in events
    ]
    return table(["id", "at (utc)", "actor", "action", "subject", "change", "reason"], rows)


def _move(e: dict[str, Any]) -> str:
    if e["from_status"] is None and e["to_status"] is None:
        return "-"
    before = f"{e['from_status'] or '-'}@{_step(e['from_step'])}"
    after = f"{e['to_status'] or '-'}@{_step(e['to_step'])}"
    return f"{before} -> {after}"


def _step(step: int | None) -> str:
    return "-" if step is None else str(step + 1)


def flag_table(flags: list[dict[str, Any]]) -> str:
    rows = [
        [
            f["key"],
            f["type"],
            "on" if f["enabled"] else "KILLED",
            f["default_variant"],
            str(len(f.get("rules", []))),
            f.get("managed_by") or "-",
            str(f["version"]),
        ]
        for f in flags
    ]
    return table(["flag", "type", "switch", "default", "rules", "rollout", "version"], rows)


def token_table(tokens: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["id"],
            t["name"],
            t["role"],
            _utc(t["created_at"]),
            _utc(t.get("expires_at")) + (" (EXPIRED)" if t.get("expired") else ""),
            _utc(t.get("last_used_at"), none="never"),
            _utc(t["revoked_at"]),
        ]
        for t in tokens
    ]
    return table(["id", "name", "role", "created", "expires", "last used", "revoked"], rows)


def _utc(at: str | None, none: str = "-") -> str:
    """``2026-12-04 18:22:01`` from an ISO timestamp in UTC (as the API writes them)."""
    return at[:19].replace("T", " ") if at else none


def readings_table(readings: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["at"][11:19],
            r["gate"],
            r["outcome"],
            _number(r["value"]),
            _number(r["baseline"]),
            _number(r["samples"]),
            f"{r['threshold']} {r['threshold_value']:g}" if r["threshold"] else "-",
            r["error"] or "",
        ]
        for r in readings
    ]
    return table(
        ["at", "gate", "outcome", "value", "baseline", "samples", "crossed", "error"], rows
    )


def _number(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):  # nan, inf: JSON has no such numbers
        return value
    return f"{value:.4g}"
