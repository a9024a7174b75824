"""Sparsity methods (``lbc``, ``srste``, ``ste``, ``asp``), one module each; the
interface and registry are :mod:`.base`."""
from .base import (
                   METHODS,
                   Requirements,
                   SparsityMethod,
                   UnsupportedOperation,
                   build_method,
                   check_sparsity_args,
                   driver_hooks,
                   method_class,
                   option_names,
                   register_method,
                   state_keys,
)

# isort: off
# Importing a method module registers it: this order is the order of METHODS.
from .lbc import LBC
from .srste import SRSTE, STE
from .asp import ASP
# isort: on

__all__ = [
    'ASP', 'LBC', 'METHODS', 'Requirements', 'SRSTE', 'STE', 'SparsityMethod',
    'UnsupportedOperation', 'build_method', 'check_sparsity_args', 'driver_hooks',
    'method_class', 'option_names', 'register_method', 'state_keys'
]
