"""Training-step cost of N:M sparse layers vs the dense model, in one process
(``tools/benchmark_train.py`` is its command line; its docstring says how memory is
measured).

The config's model is built once dense and once per (method, pattern)
(:func:`variants`); full training steps (forward, backward, the training
constructor's SGD-momentum step and, for LBC, the hook's ``remove_candidates``) are
timed alternating between the models (:func:`run`).
"""
import copy
import statistics
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from .apis import build_model, load_config
from .optim import LBCOptimWrapperConstructor
from .sparse_config import LAYER_TYPES, TRANSFORM_TYPE, type_name
from .sparse_model import lbc_layers
from .sparsity import card
from .transforms import sparsify

MB = 1024.0**2
#: Every variant's optimizer: SGD with momentum, built like a training config's.
OPTIM_WRAPPER = dict(type='OptimWrapper', optimizer=dict(
    type='SGD', lr=1e-4, momentum=0.9, weight_decay=1e-4))


def _strip(cfg: Any) -> Any:
    """Drop pretrained weights and sparse layer types from a model config."""
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_strip(v) for v in cfg)
    if not isinstance(cfg, dict):
        return cfg
    out = {}
    for key, value in cfg.items():
        if key == 'pretrained':
            continue
        init = value if isinstance(value, (list, tuple)) else [value]
        pretrained = key == 'init_cfg' and any(
            isinstance(i, dict) and i.get('type') == 'Pretrained' for i in init)
        sparse = isinstance(value, dict) and type_name(value) in LAYER_TYPES
        out[key] = None if pretrained or sparse else _strip(value)
    return type(cfg)(out)  # keeps ConfigDict (mmdet reads train_cfg.rpn)


def build_dense(config: str) -> Tuple[nn.Module, str]:
    """Build the config's model dense and without pretrained weights
    (:func:`lbc_mm.apis.build_model`; default PyTorch init: timing does not need
    ``init_cfg``)."""
    cfg = load_config(config)
    model_cfg = cfg.model
    if type_name(model_cfg) == TRANSFORM_TYPE:
        model_cfg = model_cfg['model']
    cfg.model = _strip(model_cfg)
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return build_model(cfg)


def make_batch(model: nn.Module, scope: str, batch_size: int, img_size: int,
               device: str) -> Callable[[nn.Module], torch.Tensor]:
    """A function computing the training loss of a model on one fixed batch."""
    shape = (3, img_size, img_size)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(batch_size=batch_size, image_shapes=shape,
                                num_items=[3] * batch_size, num_classes=2,
                                with_mask=getattr(model, 'with_mask', False),
                                device=device)
    else:
        from mmpretrain.structures import DataSample
        packed = dict(inputs=torch.randn(batch_size, *shape, device=device),
                      data_samples=[DataSample().set_gt_label(i % 10).to(device)
                                    for i in range(batch_size)])

    def loss_fn(mod: nn.Module) -> torch.Tensor:
        data = mod.data_preprocessor(packed, True) if scope == 'mmdet' else packed
        loss, _ = mod.parse_losses(mod(**data, mode='loss'))
        return loss

    return loss_fn


class Variant:
    """One model under test with its optimizer and results."""

    def __init__(self, name: str, model: nn.Module, keep: Dict[str, int]) -> None:
        self.name = name
        self.model = model
        self.keep = keep  # LBC: card per layer held during timing
        # The training constructor with its defaults (scores as the weights).
        self.optim = LBCOptimWrapperConstructor(OPTIM_WRAPPER)(model).optimizer
        self.times: List[float] = []  # wall seconds per step
        self.cpu_times: List[float] = []  # process CPU seconds per step
        self.peak_step = 0.0


def _loss(var: Variant, loss_fn: Callable, device: str, amp: bool) -> torch.Tensor:
    """The training loss, under autocast with ``amp`` (fp16 on CUDA, bf16 on CPU)."""
    dtype = torch.float16 if device.startswith('cuda') else torch.bfloat16
    with torch.autocast(device.split(':')[0], dtype, enabled=amp):
        return loss_fn(var.model)


def train_step(var: Variant, loss_fn: Callable, device: str,
               amp: bool) -> Tuple[float, float]:
    """One training step; returns (wall, process CPU) seconds (CUDA: also records
    the step's peak memory)."""
    var.optim.zero_grad(set_to_none=True)
    cuda = device.startswith('cuda')
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    _loss(var, loss_fn, device, amp).backward()
    var.optim.step()
    for name, layer in lbc_layers(var.model):  # what LBCHook does after an iteration
        if name in var.keep:
            layer.sparsity.remove_candidates(var.keep[name])
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if cuda:
        var.peak_step = max(var.peak_step, (torch.cuda.max_memory_allocated() - base))
    return elapsed, cpu


def _bytes(tensors) -> int:
    """Bytes of the storages behind ``tensors`` (None: no gradient), each once."""
    storages = {(t.untyped_storage().data_ptr(), t.device): t.untyped_storage()
                for t in tensors if t is not None}
    return sum(s.nbytes() for s in storages.values())


def state_breakdown(var: Variant) -> Dict[str, float]:
    """Tensor bytes (MB) of the model state, with the sparse extras separated."""
    params = list(var.model.named_parameters())
    scores = [p for n, p in params if n.endswith('.scores')]
    others = [p for n, p in params if not n.endswith('.scores')]
    extra = ('.alive', '.asp_mask')
    buffers = list(var.model.named_buffers())

    def optim(group):
        return [v for p in group for v in var.optim.state.get(p, {}).values()
                if torch.is_tensor(v)]

    tensors = dict(
        params=others, buffers=[b for n, b in buffers if not n.endswith(extra)],
        grads=[p.grad for p in others], optim=optim(others), scores=scores,
        scores_grad=[p.grad for p in scores], scores_momentum=optim(scores),
        alive=[b for n, b in buffers if n.endswith(extra)])
    return {key: _bytes(group) / MB for key, group in tensors.items()}


def saved_for_backward(var: Variant, loss_fn: Callable, amp: bool,
                       device: str) -> float:
    """MB of tensors saved for backward in one step (excluding the model state)."""
    state_ptrs = {t.untyped_storage().data_ptr() for t in
                  list(var.model.parameters()) + list(var.model.buffers())}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in state_ptrs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = _loss(var, loss_fn, device, amp)
    loss.backward()
    var.optim.zero_grad(set_to_none=True)
    return sum(seen.values()) / MB


def variants(dense: nn.Module, patterns: Sequence[Tuple[int, int]],
             methods: Sequence[str], lbc_frozen: bool = False) -> List[Variant]:
    """Dense first, then each (pattern, method); LBC mid-removal (some candidates
    removed, scores still learning, so forward, score gradients and re-zeroing all
    run) and, with ``lbc_frozen``, after ``t_f`` (card 1, scores frozen)."""
    out = [Variant('dense', dense, {})]
    for n, m in patterns:
        for method in methods:
            model = sparsify(copy.deepcopy(dense), n, m, method)
            keep = {}
            for name, layer in lbc_layers(model):
                keep[name] = card(0.5, layer.sparsity.num_candidates, 0.0, 1.0)
                with torch.no_grad():
                    layer.scores.add_(torch.rand_like(layer.scores) * 1e-3)
                layer.sparsity.remove_candidates(keep[name])
            out.append(Variant(f'{method} {n}:{m}', model, keep))
            if keep and lbc_frozen:
                model = copy.deepcopy(model)
                for _, layer in lbc_layers(model):
                    layer.sparsity.remove_candidates(1)
                    layer.sparsity.freeze_scores()
                out.append(Variant(f'{method} {n}:{m} end', model, {}))
    return out


def run(variants: Sequence[Variant], loss_fn: Callable, device: str, amp: bool,
        warmup: int, steps: int) -> List[Dict[str, Any]]:
    """Time ``warmup + steps`` rounds (order alternating), then measure memory: per
    variant ``name``, ``ms`` / ``cpu_ms`` (medians), ``peak``, ``saved`` and
    :func:`state_breakdown`'s keys (MB)."""
    for var in variants:
        var.model.train()
    for rnd in range(warmup + steps):
        for var in (variants if rnd % 2 == 0 else variants[::-1]):
            elapsed, cpu = train_step(var, loss_fn, device, amp)
            if rnd >= warmup:
                var.times.append(elapsed)
                var.cpu_times.append(cpu)
    rows = []
    for var in variants:
        state = state_breakdown(var)
        saved = saved_for_backward(var, loss_fn, amp, device)
        base = (state['params'] + state['buffers'] + state['optim'] +
                state['scores'] + state['scores_momentum'] + state['alive'])
        peak = (base + var.peak_step / MB if device.startswith('cuda') else
                base + state['grads'] + state['scores_grad'] + saved)
        rows.append(dict(name=var.name, ms=statistics.median(var.times) * 1e3,
                         cpu_ms=statistics.median(var.cpu_times) * 1e3,
                         peak=peak, saved=saved, **state))
    return rows
