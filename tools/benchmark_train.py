"""Training-step cost of N:M sparse layers vs the dense model, in one process.

Builds the config's model once dense and once per (method, pattern) with
:func:`lbc_mm.transforms.sparsify` (docs/method.md §8 scope: backbone sparse,
stem / neck / heads dense), then times full training steps (forward, backward,
SGD-momentum step built by the training constructor ``LBCOptimWrapperConstructor``
with its defaults and, for LBC, the hook's per-iteration ``remove_candidates``)
alternating between the models, and reports the median step time and memory with
ratios to dense.

Memory:

- ``--device cuda``: peak ``torch.cuda.max_memory_allocated`` of a step above the
  memory resident before it, plus the model's parameters, buffers and optimizer
  state.
- ``--device cpu``: tensor bytes of parameters + buffers + gradients + optimizer
  state, plus the tensors saved for backward (measured with
  ``torch.autograd.graph.saved_tensors_hooks`` in one extra, untimed step). The
  sparse extras are broken down: ``scores`` (G x C floats), their gradient and
  momentum, ``alive`` (G x C bool), and the masked weights / masks saved for
  backward.

Example::

    python tools/benchmark_train.py mmpretrain::resnet/resnet50_8xb32_in1k.py \\
        --batch-size 8 --img-size 224 --steps 4 --lbc-frozen
    python tools/benchmark_train.py mmpretrain::resnet/resnet50_8xb32_in1k.py \\
        --device cuda --batch-size 64 --img-size 224 --steps 20 \\
        --methods lbc,srste --patterns 2:4,2:8
"""
import argparse
import copy
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

import lbc_mm  # noqa: F401  (registers layers, compat shims)
from lbc_mm.apis import build_model, load_config
from lbc_mm.layers import sparse_layers
from lbc_mm.optim import LBCOptimWrapperConstructor
from lbc_mm.sparsity import card
from lbc_mm.sparsity.patterns import parse_pattern
from lbc_mm.transforms import sparsify

MB = 1024.0**2
#: Every variant's optimizer: SGD with momentum, built like a training config's.
OPTIM_WRAPPER = dict(type='OptimWrapper', optimizer=dict(
    type='SGD', lr=1e-4, momentum=0.9, weight_decay=1e-4))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='mmdet / mmpretrain config (file or pkg::path)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--steps', type=int, default=10, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--methods', default='lbc,srste',
                        help='comma list of lbc, srste, ste, asp')
    parser.add_argument('--patterns', default='2:4', help='comma list, e.g. 2:4,2:8')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--amp', action='store_true',
                        help='autocast (bf16 on CPU, fp16 on CUDA)')
    parser.add_argument('--lbc-frozen', action='store_true',
                        help='also time LBC after t_f (card 1, scores frozen)')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def _strip(cfg: Any) -> Any:
    """Drop pretrained weights and sparse conv types from a model config."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == 'pretrained':
                continue
            if key == 'init_cfg' and _is_pretrained(value):
                out[key] = None
                continue
            if isinstance(value, dict) and value.get('type') in ('NMSparseConv',
                                                                  'NMSparseLinear'):
                out[key] = None
                continue
            out[key] = _strip(value)
        return type(cfg)(out)  # keeps ConfigDict (mmdet reads train_cfg.rpn)
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_strip(v) for v in cfg)
    return cfg


def _is_pretrained(init_cfg: Any) -> bool:
    items = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
    return any(isinstance(i, dict) and i.get('type') == 'Pretrained' for i in items)


def build_dense(config: str) -> Tuple[nn.Module, str]:
    """Build the config's model dense and without pretrained weights
    (:func:`lbc_mm.apis.build_model`; default PyTorch init: timing does not need
    ``init_cfg``)."""
    cfg = load_config(config)
    model_cfg = cfg.model
    if model_cfg.get('type') == 'NMSparsify':
        model_cfg = model_cfg['model']
    model_cfg = _strip(model_cfg)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    cfg.model = model_cfg
    return build_model(cfg)


def make_batch(model: nn.Module, scope: str, batch_size: int, img_size: int,
               device: str) -> Callable[[nn.Module], torch.Tensor]:
    """A function computing the training loss of a model on one fixed batch."""
    shape = (3, img_size, img_size)
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        with_mask = getattr(model, 'with_mask', False)
        packed = demo_mm_inputs(batch_size=batch_size, image_shapes=shape,
                                num_items=[3] * batch_size, num_classes=2,
                                with_mask=with_mask, device=device)

        def loss_fn(mod: nn.Module) -> torch.Tensor:
            data = mod.data_preprocessor(packed, True)
            loss, _ = mod.parse_losses(mod(**data, mode='loss'))
            return loss

        return loss_fn
    from mmpretrain.structures import DataSample
    inputs = torch.randn(batch_size, *shape, device=device)
    samples = [DataSample().set_gt_label(i % 10).to(device) for i in range(batch_size)]

    def loss_fn(mod: nn.Module) -> torch.Tensor:
        loss, _ = mod.parse_losses(mod(inputs, samples, mode='loss'))
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

    def hook(self) -> None:
        """What LBCHook does after every iteration."""
        for name, layer in sparse_layers(self.model):
            if name in self.keep:
                layer.remove_candidates(self.keep[name])


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def train_step(var: Variant, loss_fn: Callable, device: str,
               amp: bool) -> Tuple[float, float]:
    """One training step; returns (wall, process CPU) seconds.

    CUDA: also records the step's peak memory. On a shared CPU machine the process
    CPU time (all threads) is the steadier measure of the work done.
    """
    var.optim.zero_grad(set_to_none=True)
    _sync(device)
    cuda = device.startswith('cuda')
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    dtype = torch.float16 if cuda else torch.bfloat16
    with torch.autocast(device.split(':')[0], dtype, enabled=amp):
        loss = loss_fn(var.model)
    loss.backward()
    var.optim.step()
    var.hook()
    _sync(device)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if cuda:
        var.peak_step = max(var.peak_step, (torch.cuda.max_memory_allocated() - base))
    return elapsed, cpu


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def state_breakdown(var: Variant) -> Dict[str, float]:
    """Tensor bytes (MB) of the model state, with the sparse extras separated."""
    params = list(var.model.parameters())
    scores = [p for n, p in var.model.named_parameters() if n.endswith('.scores')]
    score_ids = {id(p) for p in scores}
    others = [p for p in params if id(p) not in score_ids]
    state = var.optim.state
    alive = [b for n, b in var.model.named_buffers() if n.endswith('.alive')]
    masks = [b for n, b in var.model.named_buffers() if n.endswith('.asp_mask')]
    alive_ids = {id(b) for b in alive + masks}
    buffers = [b for b in var.model.buffers() if id(b) not in alive_ids]
    return dict(
        params=_bytes(others) / MB,
        buffers=_bytes(buffers) / MB,
        grads=_bytes(p.grad for p in others) / MB,
        optim=_bytes(v for p in others for v in state.get(p, {}).values()
                     if torch.is_tensor(v)) / MB,
        scores=_bytes(scores) / MB,
        scores_grad=_bytes(p.grad for p in scores) / MB,
        scores_momentum=_bytes(v for p in scores for v in state.get(p, {}).values()
                               if torch.is_tensor(v)) / MB,
        alive=_bytes(alive + masks) / MB,
    )


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

    var.optim.zero_grad(set_to_none=True)
    dtype = torch.float16 if device.startswith('cuda') else torch.bfloat16
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.split(':')[0], dtype, enabled=amp):
            loss = loss_fn(var.model)
    loss.backward()
    var.optim.zero_grad(set_to_none=True)
    return sum(seen.values()) / MB


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Run the benchmark and print the table; returns its rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda given but CUDA is not available')
    torch.manual_seed(args.seed)
    dense, scope = build_dense(args.config)
    dense.to(device)
    variants = [Variant('dense', dense, {})]
    for pattern in args.patterns.split(','):
        n, m = parse_pattern(pattern)
        for method in args.methods.split(','):
            model = sparsify(copy.deepcopy(dense), n, m, method)
            keep = {}
            for name, layer in sparse_layers(model):
                if method == 'lbc':
                    # Mid-run state: some candidates removed, scores still learning,
                    # so forward, score gradients and re-zeroing all run.
                    num_c = layer.num_candidates
                    keep[name] = card(0.5, num_c, 0.0, 1.0)
                    with torch.no_grad():
                        layer.scores.add_(torch.rand_like(layer.scores) * 1e-3)
                    layer.remove_candidates(keep[name])
            variants.append(Variant(f'{method} {n}:{m}', model, keep))
            if method == 'lbc' and args.lbc_frozen:
                model = copy.deepcopy(model)
                for _, layer in sparse_layers(model):
                    layer.remove_candidates(1)
                    layer.freeze_scores()
                variants.append(Variant(f'lbc {n}:{m} end', model, {}))
    loss_fn = make_batch(dense, scope, args.batch_size, args.img_size, device)
    for var in variants:
        var.model.train()

    for rnd in range(args.warmup + args.steps):
        order = variants if rnd % 2 == 0 else variants[::-1]
        for var in order:
            elapsed, cpu = train_step(var, loss_fn, device, args.amp)
            if rnd >= args.warmup:
                var.times.append(elapsed)
                var.cpu_times.append(cpu)

    rows = []
    for var in variants:
        state = state_breakdown(var)
        saved = saved_for_backward(var, loss_fn, args.amp, device)
        base_state = (state['params'] + state['buffers'] + state['optim'] +
                      state['scores'] + state['scores_momentum'] + state['alive'])
        if device.startswith('cuda'):
            peak = base_state + var.peak_step / MB
        else:
            peak = (base_state + state['grads'] + state['scores_grad'] + saved)
        rows.append(dict(name=var.name, ms=statistics.median(var.times) * 1e3,
                         cpu_ms=statistics.median(var.cpu_times) * 1e3,
                         peak=peak, saved=saved, **state))
    ref = rows[0]
    dev = torch.cuda.get_device_name() if device.startswith('cuda') else 'cpu'
    print(f'\n{args.config}: device {dev}, torch {torch.__version__}, batch '
          f'{args.batch_size}, {args.img_size}px, {args.steps} timed steps '
          f'(median), amp={args.amp}, threads {torch.get_num_threads()}')
    print(f'{"model":<16}{"step ms":>10}{"x dense":>9}{"cpu ms":>10}{"x dense":>9}'
          f'{"peak MB":>10}{"x dense":>9}'
          f'{"saved MB":>10}{"scores":>9}{"grad":>8}{"momentum":>10}{"alive":>8}')
    for row in rows:
        print(f'{row["name"]:<16}{row["ms"]:>10.1f}{row["ms"] / ref["ms"]:>9.3f}'
              f'{row["cpu_ms"]:>10.1f}{row["cpu_ms"] / ref["cpu_ms"]:>9.3f}'
              f'{row["peak"]:>10.1f}{row["peak"] / ref["peak"]:>9.3f}'
              f'{row["saved"]:>10.1f}{row["scores"]:>9.1f}{row["scores_grad"]:>8.1f}'
              f'{row["scores_momentum"]:>10.1f}{row["alive"]:>8.1f}')
    print('peak = ' + ('model state + optimizer state + CUDA peak of a step above '
                       'the resident memory' if device.startswith('cuda') else
                       'params + buffers + grads + optimizer state + tensors saved '
                       'for backward (tensor bytes)') +
          '; sparse extras in MB: scores (G x C), their grad and momentum, alive '
          '(G x C bool) / asp_mask; saved MB includes masked weights and masks. '
          '"lbc N:M" is mid-removal (scores learning), "lbc N:M end" after t_f. '
          'step ms: wall-clock median; cpu ms: process CPU time (all threads) '
          'median, steadier on a shared machine.')
    return rows


def cli() -> int:
    """The command: 0 once the table is printed."""
    main()
    return 0


if __name__ == '__main__':
    from lbc_mm.io import run_tool
    sys.exit(run_tool(cli))
