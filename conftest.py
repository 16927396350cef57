"""Self-test configuration shared by every test folder.

Hypothesis runs derandomised in CI (the built-in "ci" profile is picked when CI is set), so the
self-tests give the same examples on every run.
"""

import os

from hypothesis import settings

settings.register_profile("selftest", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "selftest")


def pytest_collection_modifyitems(items):
    """Start the slow self-tests first: under -n 2 the bundled demo's identity test (minutes)
    then runs beside the rest instead of alone after it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
