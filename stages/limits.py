"""The limits of a plan, refused at apply with a problem naming the field.

Each keeps one rollout's cost bounded (the memory and time to read a plan, the work of
a scheduler tick, the size of a stored row) and every datetime the scheduler computes
from a plan in range. docs/plans.md lists them for users; keep the two in step.
"""

from __future__ import annotations

from datetime import timedelta

# The plan text (YAML, UTF-8) and the stored JSON form it becomes. Checking the stored
# form too keeps a short YAML file that expands through aliases from being accepted
# once and then unreadable when its row is loaded again.
MAX_PLAN_BYTES = 256 * 1024
# YAML nodes, as written and after aliases expand (a "billion laughs" file stops
# here). The largest plan the other limits allow has some 4,000.
MAX_YAML_NODES = 20_000
# Mappings and lists inside each other; a plan needs six (steps[0].gates[0].stages[0]).
MAX_DEPTH = 32

# Any duration: a year and a leap day is longer than any step should dwell, and keeps
# ``step_started_at + hold`` far from datetime's end (year 9999).
MAX_DURATION = timedelta(days=366)
# The gate check period: faster than a second is a check every scheduler tick, slower
# than a day is a rollout nobody watches.
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(days=1)

MAX_STEPS = 100
MAX_GATES = 50  # the plan's gates and every step's gates together
MAX_REGIONS = 100  # released over the whole plan
MAX_LABELS = 64

MAX_QUERY_CHARS = 4000  # query, baseline, samples
MAX_NAME_CHARS = 128  # gate and region names, label names
# Free text (description, label values) has only the plan's limit: plans stored before
# these limits may hold long text, and a stored plan that no longer reads breaks its row.
