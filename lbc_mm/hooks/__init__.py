"""mmengine hooks of lbc_mm (registered in mmengine's root ``HOOKS``)."""
from .finite_check import FiniteCheckHook
from .lbc_hook import LBCHook
from .checkpoint import AtomicCheckpointHook  # noqa: I001  (imports lbc_mm.export)

__all__ = ['AtomicCheckpointHook', 'FiniteCheckHook', 'LBCHook']
