"""Moved to :mod:`lbc_mm.apis`; this name stays only until ``lbc_mm.deploy.onnx_*``
import from there (removed in the same restructuring step)."""
from ..apis import *  # noqa: F401,F403
from ..apis import _first_line, _refusal  # noqa: F401
