"""Shared fixtures of the hook tests: clean globals (lbc_toy: setup.cfg pythonpath)."""

import lbc_toy  # noqa: E402
import pytest


@pytest.fixture(autouse=True)
def _clean_mmengine_globals():
    yield
    lbc_toy.reset_mmengine_globals()
