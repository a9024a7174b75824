"""Sparsity methods, one module each, behind a small registry.

========  ==========================  ======================  ==================
name      class                       state on the layer      options
========  ==========================  ======================  ==================
``lbc``   :class:`~.lbc.LBC`          ``scores``, ``alive``   ``tie_break``
``srste`` :class:`~.srste.SRSTE`      (none)                  ``srste_lambda``
``ste``   :class:`~.srste.STE`        (none)                  (``srste_lambda=0``)
``asp``   :class:`~.asp.ASP`          ``asp_mask``            (none)
========  ==========================  ======================  ==================

:mod:`.base` holds the interface (:class:`SparsityMethod`) and the registry
(:data:`METHODS`); a new method is a subclass decorated with
:func:`register_method`, carrying all of its facts: options, state, operations and
what a training run needs beside its layers (``requires``: LBC's ``LBCHook`` and
the scores' optimizer constructor).
"""
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
