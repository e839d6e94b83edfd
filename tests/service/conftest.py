import pytest


@pytest.fixture(autouse=True)
def every_test_starts_from_an_empty_database(clean_database):
    yield
