"""mmengine hooks of lbc_mm (registered in mmengine's root ``HOOKS``)."""
from .lbc_hook import LBCHook

__all__ = ['LBCHook']
