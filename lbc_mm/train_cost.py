"""Training FLOPs of N:M methods on one counting convention (docs/training_cost.md,
"Counting convention": the three GEMMs per layer and their densities per method,
LBC's union density, what is not counted).

Per Conv2d / Linear layer and iteration: forward, backward for activations and
backward for weights, each ``2 x MACs x batch`` at the density of the weight entries
it needs. Pure Python over the MACs (:func:`lbc_mm.cost.layer_macs`) and the
schedule; no GPU, no training.
"""
import math
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

from .methods import method_class

Patterns = Dict[str, Tuple[int, int]]
#: The three GEMMs of a layer's training step (docs/training_cost.md).
GEMMS = ('forward', 'backward_act', 'backward_weight')


def gradual(method: str) -> bool:
    """Whether ``method`` goes from dense to N:M over its removal schedule (its
    registration's ``gradual``: the alive candidates set the density)."""
    return method != 'dense' and method_class(method).gradual


def union_density(k: int, n: int, m: int) -> float:
    """Expected share of a group's ``m`` positions kept by ``k`` alive candidates
    drawn uniformly from the ``C(m, n)`` (``k = C``: 1; ``k = 1``: ``n / m``)."""
    total = math.comb(m, n)
    avoid = math.comb(m - 1, n)  # candidates without a given position
    return 1.0 - math.comb(avoid, k) / math.comb(total, k)


def layer_densities(method: str, n: int, m: int,
                    alive: Optional[int] = None) -> Tuple[float, float, float]:
    """(forward, backward activations, backward weights) density of an N:M layer
    under ``method`` (``'dense'`` or a registered one; ASP before its mask:
    ``'dense'``); ``alive``: a gradual method's alive candidates per group (None:
    the end state)."""
    # Which GEMMs run at the N:M density once the mask is in place: the method's
    # registration says (ValueError naming the choices for an unknown method).
    sparse_gemms = ((False, ) * 3 if method == 'dense' else
                    method_class(method).sparse_gemms)
    d = n / m
    if alive is not None and gradual(method):
        d = union_density(alive, n, m)
    return tuple(d if sparse else 1.0 for sparse in sparse_gemms)


def step_flops(macs: Dict[str, int], patterns: Patterns, method: str,
               batch_size: int, alive: Optional[Dict[str, int]] = None
               ) -> Dict[str, float]:
    """FLOPs of one training iteration: ``forward``, ``backward_act``,
    ``backward_weight`` and ``total``.

    Args:
        macs (dict): layer name -> MACs of one sample's forward.
        patterns (dict): name -> ``(n, m)`` of the N:M layers (others dense).
        method (str): ``'dense'`` or a registered method.
        batch_size (int): Samples per iteration.
        alive (dict, optional): LBC: name -> alive candidates per group.
    """
    out = dict.fromkeys(GEMMS, 0.0)
    for name, count in macs.items():
        dens = (layer_densities(method, *patterns[name], (alive or {}).get(name))
                if name in patterns else (1.0, 1.0, 1.0))
        for key, d in zip(out, dens):
            out[key] += 2.0 * batch_size * count * d
    out['total'] = sum(out.values())
    return out


def card_counts(card_at: Callable[[float, int], int],
                progress: Callable[[int], float], iters: int,
                num_candidates: int) -> Counter:
    """Iterations spent at each alive count: iteration ``i`` trains with the count
    the removal after iteration ``i - 1`` left (all ``num_candidates`` alive in the
    first). ``card_at``: ``(t, C) -> card`` (``RemovalSchedule.card``);
    ``progress``: iteration index (0-based, done) -> ``t``."""
    counts: Counter = Counter()
    current = num_candidates
    for i in range(iters):
        counts[current] += 1
        current = min(current, card_at(progress(i), num_candidates))
    return counts


def training_cost(macs: Dict[str, int], patterns: Patterns, method: str,
                  batch_size: int, iters: int,
                  cards: Optional[Dict[int, Counter]] = None,
                  dense_iters: int = 0) -> Dict[str, float]:
    """Training FLOPs of a run on the convention above.

    Args:
        macs, patterns, method, batch_size: As :func:`step_flops`.
        iters (int): Training iterations.
        cards (dict, optional): LBC: ``C`` -> :func:`card_counts` of the run.
        dense_iters (int): ASP: iterations before the mask is fixed (dense).

    Returns:
        dict: ``flops``, ``flops_dense`` (same iterations), ``relative``, the three
        GEMMs' totals, ``step_first`` / ``step_last`` (FLOPs of those iterations).
    """
    if gradual(method) and cards is None:
        raise ValueError(f'training_cost(): {method} needs the card counts')
    total = dict.fromkeys(GEMMS, 0.0)
    dense = step_flops(macs, patterns, 'dense', batch_size)
    if gradual(method):
        # The step cost depends on the alive count of each layer's C. The counts only
        # fall, so entry i of each C's sorted-descending sequence is iteration i's.
        num_c = {name: math.comb(m, n) for name, (n, m) in patterns.items()}
        seqs = {c: sorted(Counter(cards[c]).elements(), reverse=True)
                for c in set(num_c.values())}
        steps = Counter(tuple(sorted((c, seq[i]) for c, seq in seqs.items()))
                        for i in range(iters))
        for alive_per_c, count in steps.items():
            alive_per_c = dict(alive_per_c)
            step = step_flops(macs, patterns, method, batch_size,
                              {name: alive_per_c[c] for name, c in num_c.items()})
            for key in GEMMS:
                total[key] += count * step[key]
        first = step_flops(macs, patterns, method, batch_size, num_c)
        last = step_flops(macs, patterns, method, batch_size,
                          {name: min(cards[c]) for name, c in num_c.items()})
    else:
        dense_iters = min(iters, dense_iters)
        sparse = step_flops(macs, patterns, method, batch_size)
        for key in GEMMS:
            total[key] = dense_iters * dense[key] + (iters - dense_iters) * sparse[key]
        first = dense if dense_iters else sparse
        last = sparse if iters > dense_iters else dense
    flops = sum(total.values())
    flops_dense = iters * dense['total']
    return dict(total, flops=flops, flops_dense=flops_dense,
                relative=flops / flops_dense if flops_dense else 1.0,
                step_first=first['total'], step_last=last['total'])


def format_step_cost(name: str, step: Dict[str, float]) -> str:
    """One line: ``name: training step 1.23 GFLOPs (forward .., backward ..)``."""
    g = 1e9
    return (f'{name}: training step {step["total"] / g:.3f} GFLOPs (forward '
            f'{step["forward"] / g:.3f}, backward activations '
            f'{step["backward_act"] / g:.3f}, backward weights '
            f'{step["backward_weight"] / g:.3f}; docs/training_cost.md)')


def run_cost(runner, model, method: str) -> Dict[str, float]:
    """:func:`training_cost` of a finished run (the method study; ``runner`` after
    ``train()``, ``model`` its unwrapped model): MACs per sample from one training
    batch, the run's iterations and batch size, for LBC its hook's schedule."""
    from .cost import layer_macs
    from .layers import sparse_layers

    loader = runner.train_dataloader
    model.eval()  # the run is over
    data = model.data_preprocessor(next(iter(loader)), False)
    macs = layer_macs(model, lambda: model(**data, mode='tensor'))
    samples = len(data['inputs'])
    macs = {name: count / samples for name, count in macs.items()}
    patterns = {name: (layer.n, layer.m) for name, layer in sparse_layers(model)}
    if not gradual(method):
        return training_cost(macs, patterns, method, loader.batch_size, runner.iter)
    # its hook's resolved schedule (LBCHook)
    hook = next(h for h in runner.hooks
                if type(h).__name__ == method_class(method).requires.hook)
    sched = hook.schedule
    ipe = sched.iters_per_epoch
    cards = {c: card_counts(sched.card, lambda i: sched.progress(i, i // ipe, i % ipe),
                            runner.iter, c)
             for c in {math.comb(m, n) for n, m in patterns.values()}}
    cost = training_cost(macs, patterns, method, loader.batch_size, runner.iter,
                         cards)
    # the layers' own kept share, (t, 1 - sparsity), logged
    return dict(cost, kept_log=[[row[0], 1.0 - row[2]] for row in hook.history])


def step_cost_lines(model, scope: str, shape: Tuple[int, int], method: str,
                    batch_size: int, label: Optional[str] = None) -> List[str]:
    """Report lines (``tools/benchmark_train.py``) of a model's per-step training
    FLOPs as built, input as :func:`lbc_mm.cost.sample_forward`: LBC at its start
    (every candidate alive) and end, other methods once; ``label`` (default
    ``method``) prefixes the lines."""
    import copy

    from .cost import layer_macs, sample_forward
    from .layers import sparse_layers

    probe = copy.deepcopy(model).cpu().eval()  # the model itself stays as it is
    macs = layer_macs(probe, sample_forward(probe, scope, shape))
    patterns = {name: (layer.n, layer.m) for name, layer in sparse_layers(model)}
    label = label or method
    if not gradual(method):
        return [format_step_cost(label, step_flops(macs, patterns, method,
                                                   batch_size))]
    start = {name: math.comb(m, n) for name, (n, m) in patterns.items()}
    return [format_step_cost(f'{label} (start, all candidates alive)',
                             step_flops(macs, patterns, method, batch_size, start)),
            format_step_cost(f'{label} (end, N:M)',
                             step_flops(macs, patterns, method, batch_size))]
