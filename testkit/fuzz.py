"""How hard the property-based tests (tests/integration/test_properties.py) try: seeded, bounded.

Every property test is derandomized (its seed comes from its name, so a run is the same run
every time and in CI) and keeps no example database. It tries `RECONCILER_FUZZ_EXAMPLES`
generated cases (default 200: a few seconds each); a longer run is one command:

    RECONCILER_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/integration/test_properties.py \
        --hypothesis-show-statistics
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

DEFAULT_EXAMPLES = 200
EXAMPLES = int(os.environ.get("RECONCILER_FUZZ_EXAMPLES") or DEFAULT_EXAMPLES)

FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,  # timing is never asserted; the count of cases bounds the time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=False,
)

# What each property test saw, by outcome ("config: error", "webhook: 400", ...): printed at
# the end of the session (see tests/conftest.py) for the record of what a run tried and found.
TALLY: Counter[str] = Counter()
