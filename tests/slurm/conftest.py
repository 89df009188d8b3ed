"""Fixtures for the tests that submit to the two-node Slurm cluster."""

from __future__ import annotations

import pytest

from tests.slurm import two_nodes


@pytest.fixture
def two_node_cluster() -> None:
    """Skip, with the reason, unless the two-node cluster takes jobs now."""
    reason = two_nodes.unusable()
    if reason:
        pytest.skip(reason)
