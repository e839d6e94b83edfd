"""Unit tests are pure rules: no app, no database (STYLE.md). Asking for either fails loudly."""
import pytest


@pytest.fixture
def app():
    raise RuntimeError("tests/unit runs without an app or a database; put this test in tests/service")
