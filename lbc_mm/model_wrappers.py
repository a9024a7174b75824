"""DDP wrapper that trains LBC models on CPU (gloo) and GPU alike."""
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

    Three changes for LBC: a CPU module gets ``device_ids=None`` (mmengine always
    passes ``LOCAL_RANK``); every LBC ``scores`` requires grad when DDP is built
    (DDP only syncs those, and ``frozen_stages`` turned frozen layers' scores off,
    which ``frozen_layers='learn'`` trains); ``find_unused_parameters`` defaults to
    True for LBC models, since ``LBCHook`` freezes scores at card 1.

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
