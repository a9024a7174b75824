"""Shared fixtures of the hook tests: the toy module on sys.path, clean globals."""
import os.path as osp
import sys

import pytest

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import lbc_toy  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_mmengine_globals():
    yield
    lbc_toy.reset_mmengine_globals()
