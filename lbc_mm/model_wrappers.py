"""DDP wrapper that trains LBC models on CPU (gloo) and GPU alike.

Three things plain ``MMDistributedDataParallel`` gets wrong for LBC:

1. ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]``; a CPU module needs
   ``device_ids=None`` (DDP refuses device ids for CPU modules).
2. DDP only synchronises the gradients of parameters that require gradients *when it
   is built*. mmdet's ``frozen_stages`` turns ``requires_grad`` off on every parameter
   of the stem and stage 1 - scores included - before the model is wrapped, so with
   ``LBCHook(frozen_layers='learn')`` those scores would learn from unsynchronised
   gradients and the ranks would remove different candidates. We switch
   ``requires_grad`` on for every LBC ``scores`` right before DDP is built.
3. ``LBCHook`` freezes the scores of a layer at card 1 (``requires_grad=False``); DDP
   then waits forever for their gradients unless ``find_unused_parameters=True``. That
   is the default here for models with LBC layers (costs one graph traversal per
   iteration); a parameter unused on every rank keeps ``grad=None``, so the optimizer
   applies neither momentum nor weight decay to it.
"""
from typing import Optional

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

from .sparse_model import lbc_layers


def lbc_scores(module: nn.Module) -> list:
    """The ``scores`` parameters of the sparse LBC layers of ``module``."""
    return [layer.scores for _, layer in lbc_layers(module)]


@MODEL_WRAPPERS.register_module()
class LBCDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for LBC models, on CPU or GPU.

    Args:
        module (nn.Module): The model to wrap (already on its device).
        detect_anomalous_params (bool): See ``MMDistributedDataParallel``.
            Defaults to False.
        find_unused_parameters (bool, optional): Passed to DDP. Defaults to None:
            True when the model has LBC layers, else False.
        **kwargs: Other ``DistributedDataParallel`` arguments. ``device_ids`` and
            ``output_device`` are dropped for a CPU module. ``broadcast_buffers``
            defaults to False like mmengine's own wrapping.
    """

    def __init__(self,
                 module: nn.Module,
                 detect_anomalous_params: bool = False,
                 find_unused_parameters: Optional[bool] = None,
                 **kwargs) -> None:
        first = next(module.parameters(), None)
        if first is None or first.device.type == 'cpu':
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        scores = lbc_scores(module)
        for param in scores:
            # Register every score with DDP, also the ones frozen at build time.
            param.requires_grad_(True)
        if find_unused_parameters is None:
            find_unused_parameters = bool(scores)
        kwargs.setdefault('broadcast_buffers', False)
        super().__init__(
            module=module,
            detect_anomalous_params=detect_anomalous_params,
            find_unused_parameters=find_unused_parameters,
            **kwargs)
