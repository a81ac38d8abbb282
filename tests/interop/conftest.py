"""The interoperability tests' browser is the browser tests' own (Debian's Chromium, tests/e2e/conftest.py)."""

from tests.e2e.conftest import browser  # noqa: F401  (a fixture, found by pytest here)
