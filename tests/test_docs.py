"""The repo carries its own copy of the HTTP contract (docs/api.md), kept in step with the programme's."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "API.md"  # beside a checkout on the team's machines and in CI


def test_the_contract_is_in_the_repo():
    text = (REPO / "docs" / "api.md").read_text(encoding="utf-8")

    assert text.startswith("# HTTP API contract")
    assert "## Members" in text and "## Points" in text


@pytest.mark.skipif(not SHARED.exists(), reason="no shared/API.md beside this checkout")
def test_the_repo_copy_of_the_contract_is_in_step_with_the_programmes():
    assert (REPO / "docs" / "api.md").read_text(encoding="utf-8") == SHARED.read_text(encoding="utf-8"), (
        "shared/API.md changed: copy it to docs/api.md and build what changed")
