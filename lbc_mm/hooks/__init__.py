"""mmengine hooks of lbc_mm (registered in mmengine's root ``HOOKS``)."""
from .checkpoint import AtomicCheckpointHook
from .finite_check import FiniteCheckHook
from .lbc_hook import LBCHook

__all__ = ['AtomicCheckpointHook', 'FiniteCheckHook', 'LBCHook']
