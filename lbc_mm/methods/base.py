"""The interface of a sparsity method and the registry of methods.

A sparse layer (:mod:`lbc_mm.layers`) keeps the ``nn`` plumbing and holds one method
object, ``layer.sparsity``, bound once to it. The method class owns its options,
the layer state it registers (``state_keys``, also the checkpoint keys), the mask
and masked weight, what a load means for that state, its own operations (another
method's operation is :class:`UnsupportedOperation`) and what a run needs beside
the layers (``requires``, read by :mod:`lbc_mm.config_check`, the study and
``LBCHook``).
"""
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

from torch import Tensor, nn

from ..sparsity import validate_pattern

__all__ = ['METHODS', 'Requirements', 'SparsityMethod', 'UnsupportedOperation',
           'build_method', 'check_sparsity_args', 'driver_hooks', 'method_class',
           'option_names', 'register_method', 'state_keys']

#: name -> method class, in registration order (``tuple(METHODS)``: the names).
METHODS: Dict[str, Type['SparsityMethod']] = {}


class UnsupportedOperation(AttributeError):
    """An operation of one sparsity method called on a layer of another."""


@dataclass(frozen=True)
class Requirements:
    """What a training run with a method's layers needs beside them (config names).

    Attributes:
        hook (str): The ``custom_hooks`` type that drives the layers.
        constructor (str): The ``optim_wrapper.constructor`` that hook needs (the
            optimizer is built before any hook runs).
        duty (str): What the hook does for the layers (in messages).
        without (str): What happens without it (in messages).
    """

    hook: str
    constructor: str
    duty: str
    without: str


def register_method(cls: Type['SparsityMethod']) -> Type['SparsityMethod']:
    """Class decorator: add ``cls`` to :data:`METHODS` under ``cls.name``."""
    if cls.name in METHODS:
        raise KeyError(f'sparsity method {cls.name!r} is already registered')
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> Type['SparsityMethod']:
    """The registered class of ``name``; ``ValueError`` naming the choices."""
    if name not in METHODS:
        raise ValueError(f'unknown method {name!r}, expected one of {tuple(METHODS)}')
    return METHODS[name]


def option_names() -> Tuple[str, ...]:
    """Every method option a sparse layer config may carry (the methods' union)."""
    names: Dict[str, None] = {}
    for cls in METHODS.values():
        names.update(dict.fromkeys(cls.options))
    return tuple(names)


def state_keys() -> Tuple[str, ...]:
    """Every method's layer state names (the checkpoint keys only sparse layers
    have: ``scores``, ``alive``, ``asp_mask``)."""
    return tuple(key for cls in METHODS.values() for key in cls.state_keys)


def driver_hooks() -> Tuple[str, ...]:
    """The hooks registered methods require (``'LBCHook'``)."""
    return tuple(dict.fromkeys(cls.requires.hook for cls in METHODS.values()
                               if cls.requires is not None))


def check_sparsity_args(n: int, m: int, method: str, **options: Any) -> Dict[str, Any]:
    """A sparse layer's options, defaults filled in (``None``: the default).

    Raises:
        ValueError: An invalid pattern, an unknown method, an option the method
            does not take or a value it refuses; the message names the argument.
    """
    validate_pattern(n, m)
    return method_class(method).resolve_options(**options)


def build_method(method: str, layer: nn.Module, **options: Any) -> 'SparsityMethod':
    """A new method object bound to ``layer`` (options checked)."""
    return method_class(method)(layer, **options)


class SparsityMethod:
    """What one sparsity method does to a layer (subclass per method).

    Subclasses set the class attributes and implement :meth:`mask` and
    :meth:`masked_weight`; the rest has a neutral default.
    """

    #: Registry name (``method='...'`` in configs).
    name: ClassVar[str] = ''
    #: Name in messages.
    label: ClassVar[str] = ''
    #: Layer options the method takes -> their defaults.
    options: ClassVar[Dict[str, Any]] = {}
    #: Options whose one allowed value the method fixes (a study run sets them).
    fixed_options: ClassVar[Dict[str, Any]] = {}
    #: Names of the state it registers on the layer (also its checkpoint keys).
    state_keys: ClassVar[Tuple[str, ...]] = ()
    #: Its own operations (methods and properties of the object).
    operations: ClassVar[Tuple[str, ...]] = ()
    #: Which training GEMMs (forward, backward for activations, backward for weights)
    #: run at the N:M density once the mask is fixed (:mod:`lbc_mm.train_cost`).
    sparse_gemms: ClassVar[Tuple[bool, bool, bool]] = (True, True, True)
    #: Whether the kept positions shrink from dense to N:M during training, as the
    #: required hook removes candidates (their union sets the density meanwhile).
    gradual: ClassVar[bool] = False
    #: What a training run with these layers needs (None: nothing).
    requires: ClassVar[Optional[Requirements]] = None

    def __init__(self, layer: nn.Module, **options: Any) -> None:
        for key, value in self.resolve_options(**options).items():
            setattr(self, key, value)
        #: The layer this object belongs to.
        self.layer = layer

    def __getattr__(self, name: str):
        # Only reached for names the object lacks: another method's operation is
        # one line naming the layer and the methods that have it.
        owners = [repr(cls.name) for cls in METHODS.values() if name in cls.operations]
        if not owners or name.startswith('__'):
            raise AttributeError(f'{type(self).__name__} has no attribute {name!r}')
        layer = self.__dict__.get('layer')
        where = layer.describe() if layer is not None else type(self).__name__
        raise UnsupportedOperation(
            f'{where}: {name} is an operation of method {" / ".join(owners)}, not '
            f'of {self.name!r}')

    # -- options ----------------------------------------------------------------
    @classmethod
    def resolve_options(cls, **given: Any) -> Dict[str, Any]:
        """``given`` checked, defaults filled in (``None`` = default)."""
        given = {k: v for k, v in given.items() if v is not None}
        for key in given:
            if key not in cls.options:
                takes = (f'; it takes {", ".join(cls.options)}' if cls.options else
                         '; it takes no option')
                raise ValueError(f'{key} does not apply to method {cls.name!r}{takes}')
        resolved = dict(cls.options, **given)
        cls.check_options(resolved)
        return resolved

    @classmethod
    def check_options(cls, options: Dict[str, Any]) -> None:
        """Refuse bad option values (``ValueError`` naming the option)."""

    # -- state and forward ----------------------------------------------------
    def init_state(self) -> None:
        """Register the method's state on a sparse layer (``state_keys``)."""

    def mask(self) -> Tensor:
        """The current binary mask (bool, ``weight.shape``) of a sparse layer."""
        raise NotImplementedError

    def masked_weight(self) -> Tensor:
        """The weight ``forward`` uses, with the method's gradient rule."""
        raise NotImplementedError

    # -- checkpoints ----------------------------------------------------------
    def check_load(self, state_dict: dict, prefix: str, where: str) -> None:
        """``ValueError`` (``where``, key, shapes) for state of another shape."""
        for key in self.state_keys:
            own, theirs = getattr(self.layer, key), state_dict.get(prefix + key)
            if theirs is not None and tuple(theirs.shape) != tuple(own.shape):
                raise ValueError(
                    f'{where}: checkpoint {key} has shape {tuple(theirs.shape)}, this '
                    f'layer needs {tuple(own.shape)} (another N:M pattern?)')

    def after_load(self, state_dict: dict, prefix: str, missing_keys: list) -> None:
        """Bring the method's state in line with what a load gave the layer."""
