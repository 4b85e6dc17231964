"""What a gate value means (``stages.gates``), and how values get into a query safely."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.gates.prometheus import QueryTemplateError, escape_label_value, render_query
from stages.gates import Classification, classify, describe
from stages.plan import Gate
from stages.query_templates import escape_regex_value
from stages.state import Outcome

OK, HOLD, NO_DATA, ROLLBACK, ABORT = (
    Outcome.OK,
    Outcome.HOLD,
    Outcome.NO_DATA,
    Outcome.ROLLBACK,
    Outcome.ABORT,
)
NAN, INF = math.nan, math.inf


def gate(**fields: Any) -> Gate:
    return Gate(name="g", query="q", **fields)


ERR = gate(hold_above=0.001, rollback_above=0.01, abort_above=0.05)
AVAIL = gate(hold_below=0.999, rollback_below=0.99, abort_below=0.9)
RELATIVE = gate(baseline="b", hold_above=0.001, rollback_above=0.01)
COUNTED = gate(samples="s", min_samples=100, hold_above=0.001)
ZERO = gate(rollback_above=0)

# (case id, gate, value, baseline, samples, outcome, threshold crossed)
CASES = [
    ("below every threshold", ERR, 0.0005, None, None, OK, None),
    ("hold crossed", ERR, 0.002, None, None, HOLD, "hold_above"),
    ("rollback crossed", ERR, 0.02, None, None, ROLLBACK, "rollback_above"),
    ("abort crossed", ERR, 0.06, None, None, ABORT, "abort_above"),
    ("hold equal is not crossed", ERR, 0.001, None, None, OK, None),
    ("rollback equal is not crossed", ERR, 0.01, None, None, HOLD, "hold_above"),
    ("abort equal is not crossed", ERR, 0.05, None, None, ROLLBACK, "rollback_above"),
    ("worst first: abort beats rollback and hold", ERR, 1.0, None, None, ABORT, "abort_above"),
    ("+inf crosses every above", ERR, INF, None, None, ABORT, "abort_above"),
    ("-inf crosses no above: never ok, no data", ERR, -INF, None, None, NO_DATA, None),
    ("+inf crosses no below: no data", AVAIL, INF, None, None, NO_DATA, None),
    (
        "+inf error rate rolls back",
        gate(hold_above=0.001, rollback_above=0.01),
        INF,
        None,
        None,
        ROLLBACK,
        "rollback_above",
    ),
    ("baseline: +inf baseline crosses no above: no data", RELATIVE, 0.5, INF, None, NO_DATA, None),
    (
        "baseline: -inf baseline makes +inf worse",
        RELATIVE,
        0.5,
        -INF,
        None,
        ROLLBACK,
        "rollback_above",
    ),
    (
        "baseline: +inf value against a finite one",
        RELATIVE,
        INF,
        0.5,
        None,
        ROLLBACK,
        "rollback_above",
    ),
    ("baseline of an absolute gate: inf ignored", ERR, 0.0005, INF, None, OK, None),
    ("samples: +inf counts but is never ok evidence", COUNTED, 0.0, None, INF, NO_DATA, None),
    ("samples: +inf with a breach holds", COUNTED, 0.5, None, INF, HOLD, "hold_above"),
    ("samples: -inf is too few", COUNTED, 0.5, None, -INF, NO_DATA, None),
    ("zero threshold: zero is fine", ZERO, 0.0, None, None, OK, None),
    ("zero threshold: any at all crosses", ZERO, 1.0, None, None, ROLLBACK, "rollback_above"),
    ("below: healthy", AVAIL, 0.9995, None, None, OK, None),
    ("below: hold", AVAIL, 0.995, None, None, HOLD, "hold_below"),
    ("below: rollback", AVAIL, 0.95, None, None, ROLLBACK, "rollback_below"),
    ("below: abort", AVAIL, 0.5, None, None, ABORT, "abort_below"),
    ("below: equal is not crossed", AVAIL, 0.999, None, None, OK, None),
    ("below: -inf crosses abort", AVAIL, -INF, None, None, ABORT, "abort_below"),
    ("baseline: same as old is ok", RELATIVE, 0.03, 0.03, None, OK, None),
    ("baseline: a little worse holds", RELATIVE, 0.032, 0.03, None, HOLD, "hold_above"),
    ("baseline: much worse rolls back", RELATIVE, 0.05, 0.03, None, ROLLBACK, "rollback_above"),
    ("baseline: better than old is ok", RELATIVE, 0.0, 0.03, None, OK, None),
    ("baseline: high but equal to old is ok", RELATIVE, 0.5, 0.5, None, OK, None),
    ("baseline: inf minus inf is no data", RELATIVE, INF, INF, None, NO_DATA, None),
    ("no data: None", ERR, None, None, None, NO_DATA, None),
    ("no data: NaN", ERR, NAN, None, None, NO_DATA, None),
    ("no data: baseline missing", RELATIVE, 0.5, None, None, NO_DATA, None),
    ("no data: baseline NaN", RELATIVE, 0.5, NAN, None, NO_DATA, None),
    ("no data: samples missing", COUNTED, 0.5, None, None, NO_DATA, None),
    ("no data: samples NaN", COUNTED, 0.5, None, NAN, NO_DATA, None),
    ("no data: too few samples, even when breached", COUNTED, 0.5, None, 99, NO_DATA, None),
    ("enough samples: exactly the minimum counts", COUNTED, 0.5, None, 100, HOLD, "hold_above"),
    ("enough samples: ok", COUNTED, 0.0, None, 5000, OK, None),
    ("no thresholds: anything is ok", gate(), 123.0, None, None, OK, None),
    ("baseline given but gate is absolute: ignored", ERR, 0.002, 0.002, None, HOLD, "hold_above"),
]


@pytest.mark.parametrize(
    ("gate_", "value", "baseline", "samples", "outcome", "threshold"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_classify(
    gate_: Gate,
    value: float | None,
    baseline: float | None,
    samples: float | None,
    outcome: Outcome,
    threshold: str | None,
) -> None:
    c = classify(gate_, value, baseline, samples)
    assert (c.outcome, c.threshold) == (outcome, threshold)
    expected_value = None if threshold is None else getattr(gate_, threshold)
    assert c.threshold_value == expected_value


def test_classify_reports_the_compared_value_of_a_relative_gate() -> None:
    c = classify(RELATIVE, 0.05, 0.03)
    assert c.compared == pytest.approx(0.02)
    assert classify(ERR, 0.02).compared == 0.02
    assert classify(ERR, None).compared is None


@pytest.mark.parametrize(
    ("gate_", "classification", "text"),
    [
        (ERR, classify(ERR, 0.031), "0.031 > rollback_above 0.01"),
        (ERR, classify(ERR, 0.0002), "ok (0.0002)"),
        (AVAIL, classify(AVAIL, 0.95), "0.95 < rollback_below 0.99"),
        (RELATIVE, classify(RELATIVE, 0.05, 0.03), "0.02 vs baseline > rollback_above 0.01"),
        (ERR, classify(ERR, None), "no data"),
        (ERR, Classification(Outcome.ERROR, None, None, None), "error"),
    ],
    ids=["above", "ok", "below", "relative", "no data", "error"],
)
def test_describe(gate_: Gate, classification: Classification, text: str) -> None:
    assert describe(gate_, classification) == text


# --- templates ----------------------------------------------------------------------------

VARIABLES = {
    "rollout": "memory-layer",
    "flag": "memory-layer",
    "stage": "canary",
    "step": "2",
    "percent": "1",
    "new_variant": "on",
    "old_variant": "off",
}


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        (
            'sum(rate(x{rollout="${rollout}",variant="${new_variant}"}[5m]))',
            VARIABLES,
            'sum(rate(x{rollout="memory-layer",variant="on"}[5m]))',
        ),
        ("no placeholders", VARIABLES, "no placeholders"),
        ('x{a="$${rollout}"}', VARIABLES, 'x{a="${rollout}"}'),
        ("cost $$5", VARIABLES, "cost $5"),
        ('x{path=~".*/api$"}', VARIABLES, 'x{path=~".*/api$"}'),
        ('x{r="${rollout}"}', {"rollout": 'a"b'}, 'x{r="a\\"b"}'),
        ('x{r="${rollout}"}', {"rollout": "a\\b"}, 'x{r="a\\\\b"}'),
        ('x{r="${rollout}"}', {"rollout": "a\nb\r\tc"}, 'x{r="a\\nb\\r\\tc"}'),
        ('x{r="${rollout}"}', {"rollout": '\\"'}, 'x{r="\\\\\\""}'),
        ('x{r="${rollout}"}', {"rollout": "${flag}"}, 'x{r="${flag}"}'),
        ('x{r="${rollout}"}', {"rollout": "\x00\x1b\x7f"}, 'x{r="\\x00\\x1b\\x7f"}'),
        ('x{r="${rollout}"}', {"rollout": "é😀\u2028"}, 'x{r="é😀\u2028"}'),
        ('x{r="${rollout}"}', {"rollout": "\ufffd"}, 'x{r="\\ufffd"}'),
    ],
    ids=[
        "variables",
        "plain",
        "$$ before a brace",
        "$$",
        "lone $ is literal",
        "quote",
        "backslash",
        "newline, cr, tab",
        "backslash then quote",
        "values are not re-expanded",
        "other control characters",
        "unicode passes through",
        "replacement character",
    ],
)
def test_render_query(template: str, variables: dict[str, str], expected: str) -> None:
    assert render_query(template, variables) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('x{r="${region}"}', "unknown variable ${region}"),
        ('x{r="${}"}', "invalid placeholder ${}"),
        ('x{r="${bad-name}"}', "invalid placeholder ${bad-name}"),
        ('x{r="${rollout"', "unterminated placeholder"),
    ],
    ids=["unknown", "empty", "not a name", "unterminated"],
)
def test_render_query_rejects_a_bad_template(template: str, message: str) -> None:
    with pytest.raises(QueryTemplateError, match=message.replace("$", r"\$")):
        render_query(template, VARIABLES)


def test_escape_rejects_a_lone_surrogate() -> None:
    with pytest.raises(QueryTemplateError, match="surrogate"):
        escape_label_value("a\ud800b")


_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def unescape_promql_string(text: str) -> str:
    """Read back the inside of a double-quoted PromQL string, as Go's strconv would."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"' or ch == "\n":
            raise ValueError(f"raw {ch!r} at {i} would end or break the string")
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = text[i + 1]
        if kind in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[kind])
            i += 2
        elif kind in "xu":
            width = 2 if kind == "x" else 4
            out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise ValueError(f"unknown escape \\{kind} at {i}")
    return "".join(out)


@given(st.text())
def test_any_value_round_trips_through_escaping(value: str) -> None:
    escaped = escape_label_value(value)
    assert unescape_promql_string(escaped) == value
    assert "\ufffd" not in escaped  # PromQL's lexer would take it for broken UTF-8


@given(st.text(), st.text())
def test_a_value_cannot_break_out_of_its_quotes(value: str, other: str) -> None:
    rendered = render_query('x{a="${rollout}",b="${flag}"}', {"rollout": value, "flag": other})
    prefix, rest = rendered.split('{a="', 1)
    first, second = rest.split('",b="', 1)
    assert prefix == "x"
    assert rendered.endswith('"}')
    # Splitting on the separator can only cut where the template put it: the values hold
    # no raw quote, so the first value read back is exactly the first value given.
    assert unescape_promql_string(first) == value
    assert unescape_promql_string(second[: -len('"}')]) == other


def test_no_finite_or_infinite_number_without_a_breach_is_anything_but_ok_or_no_data() -> None:
    for value in (NAN, INF, -INF, 0.0, 1e308):
        c = classify(gate(hold_above=1e300), value)
        assert c.outcome in (OK, NO_DATA, HOLD)
        if not math.isfinite(value):
            assert c.outcome is not OK


# --- templates by where they stand ------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ('x{r=~"${rollout}"}', "a.b", 'x{r=~"a\\\\.b"}'),
        ('x{r!~"pre-${rollout}|other"}', "(x)+", 'x{r!~"pre-\\\\(x\\\\)\\\\+|other"}'),
        ('x{r =~ "${rollout}"}', '"', 'x{r =~ "\\""}'),
        ('x{r="${rollout}"}', "a.b", 'x{r="a.b"}'),
        ('x{a=~"b",r="${rollout}"}', "a.b", 'x{a=~"b",r="a.b"}'),
        ('x{r="\\${rollout}"}', "n", 'x{r="\\${rollout}"}'),
    ],
    ids=[
        "regex: dot",
        "regex: groups and plus",
        "regex: quote",
        "string: dot stays",
        "regex before, string after",
        "placeholder after a backslash stays as written",
    ],
)
def test_render_escapes_for_the_context(template: str, value: str, expected: str) -> None:
    assert render_query(template, {"rollout": value}) == expected


@given(st.text())
def test_a_regex_value_matches_only_itself(value: str) -> None:
    import re

    inside = unescape_promql_string(escape_regex_value(value))
    # Python's re reads RE2's escaped metacharacters the same way.
    assert re.fullmatch(inside, value, flags=re.DOTALL)


def test_numeric_variables_may_stand_bare_but_must_be_numbers() -> None:
    assert render_query("x > ${step} * ${percent}", VARIABLES) == "x > 2 * 1"
    with pytest.raises(QueryTemplateError, match="must be a number"):
        render_query("x > ${step}", {"step": "1 or vector(1)"})


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ("x{r='${rollout}'}", "a single-quoted string"),
        ("x{r=`${rollout}`}", "a backtick string"),
        ("x{r=~'${rollout}'}", "a single-quoted string"),
        ("${rollout}_total", "outside any string"),
        ("x # ${rollout}", "a comment"),
    ],
)
def test_render_refuses_a_text_value_where_it_cannot_be_escaped(template: str, where: str) -> None:
    with pytest.raises(QueryTemplateError, match=where):
        render_query(template, {"rollout": "r"})
