"""What ``LBCHook`` checks and says: the N:M end state, DDP rank agreement, the
optimizer audit, finite scores, the EMA model's candidates and the log lines."""
import logging
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
from mmengine.dist import all_gather, get_world_size
from mmengine.hooks import EMAHook
from mmengine.logging import print_log
from torch import nn

from ..layers import sparse_layers
from ..methods import LBC
from ..optim import SCORES_GROUP_KEY
from ..sparse_model import describe_tensors, lbc_layers, nm_report, non_finite_tensors
from .finite_check import FIX

Layers = Sequence[Tuple[str, nn.Module]]


def nm_problems(model: nn.Module, prefix: str = '') -> List[str]:
    """One line per LBC layer that is not exactly N:M (one alive candidate per
    group, ``n`` of ``m`` weights kept), each after ``prefix``."""
    layers = dict(lbc_layers(model))
    rows = nm_report(model, {name: (lay.n, lay.m) for name, lay in layers.items()})
    lines = []
    for row in rows:
        layer = layers[row['layer']]
        alive = layer.sparsity.num_alive  # (G,)
        bad_alive = int((alive != 1).sum())
        if bad_alive or row['bad_groups']:
            lines.append(
                f'{prefix}{row["layer"]} ({row["pattern"]}, weight '
                f'{tuple(row["shape"])}): {bad_alive} of {row["groups"]} groups have '
                f'more than one alive candidate (up to {int(alive.max())}), '
                f'{row["bad_groups"]} groups keep more than {layer.n} of {layer.m} '
                f'weights')
    return lines


def ema_hooks(hooks: Iterable) -> List[EMAHook]:
    """The ``EMAHook`` s of a runner that hold an EMA model."""
    return [h for h in hooks if isinstance(h, EMAHook) and hasattr(h, 'ema_model')]


def sync_ema(hooks: Iterable) -> int:
    """Give every ``EMAHook``'s EMA model the trained model's ``alive`` (removed
    scores set to 0); returns the number of EMA layers synchronised."""
    count = 0
    for hook in ema_hooks(hooks):
        src = dict(lbc_layers(hook.src_model))
        with torch.no_grad():
            for name, ema_layer in lbc_layers(hook.ema_model.module):
                if name in src:
                    ema_layer.alive.copy_(src[name].alive.to(ema_layer.alive.device))
                    ema_layer.scores.masked_fill_(~ema_layer.alive, 0.0)
                    count += 1
    return count


def end_of_training_check(model: nn.Module, hooks: Iterable, layers: Layers) -> None:
    """Fail when the model (or an EMA model) holds a non-finite tensor
    (``FloatingPointError``) or is not exactly N:M (``RuntimeError``), naming
    them; else log :func:`passed_line`."""
    emas = ema_hooks(hooks)
    bad = non_finite_tensors(model) + [
        f'EMA model: {name}' for hook in emas
        for name in non_finite_tensors(hook.ema_model.module)]
    if bad:
        raise FloatingPointError(
            f'LBCHook: training ended with non-finite weights in '
            f'{describe_tensors(bad)}; {FIX}')
    problems = nm_problems(model)
    for hook in emas:
        problems += nm_problems(hook.ema_model.module, prefix='EMA model: ')
    if problems:
        raise RuntimeError(
            'LBCHook: training ended but the model is not exactly N:M '
            f'({len(problems)} layers):\n  ' + '\n  '.join(problems))
    print_log(passed_line(layers, bool(emas), len(dense_fallbacks(model)[0])),
              logger='current')


def check_ranks_agree(layers: Layers) -> None:
    """Fail when DDP ranks kept different candidates (a collective)."""
    if get_world_size() == 1:
        return
    mine = torch.stack([layer.sparsity.alive_checksum()
                        for _, layer in layers])  # (L, 2)
    gathered = all_gather(mine)
    differ = [name for i, (name, _) in enumerate(layers)
              if any(not torch.equal(g[i].cpu(), gathered[0][i].cpu())
                     for g in gathered[1:])]
    if differ:
        raise RuntimeError(
            f'LBCHook: DDP ranks kept different candidates in {len(differ)} '
            f'layers: {", ".join(differ)}')


def passed_line(layers: Layers, with_ema: bool, dense: int = 0) -> str:
    """The line logged when the end-of-training checks pass; ``dense``: N:M layers
    that stayed dense."""
    patterns = sorted({(layer.n, layer.m) for _, layer in layers})
    exact = ', '.join(f'{n}:{m}' for n, m in patterns)
    ema = ' (EMA model too)' if with_ema else ''
    world = get_world_size()
    ranks = (f'all {world} ranks chose the same candidates' if world > 1 else
             'one process, no ranks to compare')
    stayed = (f'; {dense} N:M layers stayed dense (input channels not divisible '
              'by M)' if dense else '')
    return (f'LBCHook: end-of-training checks passed: {len(layers)} LBC '
            f'layers exactly {exact}{ema}{stayed}; {ranks}')


def check_optimizer(optim_wrapper, learning: Layers) -> None:
    """``RuntimeError`` when scores of ``learning`` layers are in no param group;
    a warning when the generic rules set their weight decay."""
    wrappers = (list(optim_wrapper.values()) if hasattr(optim_wrapper, 'values')
                else [optim_wrapper])
    group_of: Dict[int, dict] = {}
    for wrapper in wrappers:
        for group in wrapper.optimizer.param_groups:
            for param in group['params']:
                group_of[id(param)] = group
    missing = [name for name, layer in learning if id(layer.scores) not in group_of]
    if missing:
        raise RuntimeError(
            f'LBCHook: the scores of {len(missing)} LBC layers are not in the '
            f'optimizer (first: {missing[0]}), so they could never learn; build '
            f"it with optim_wrapper.constructor='{LBC.requires.constructor}' "
            f'(mmengine skips parameters frozen at build time when a '
            f'paramwise_cfg is given)')
    decayed = [name for name, layer in learning
               if not group_of[id(layer.scores)].get(SCORES_GROUP_KEY)
               and group_of[id(layer.scores)].get('weight_decay', 0)]
    if decayed:
        print_log(
            f'LBCHook: the scores of {len(decayed)} LBC layers are under weight '
            f'decay set by the generic param-group rules (custom_keys, '
            f"multipliers); use optim_wrapper.constructor="
            f"'{LBC.requires.constructor}' to set it with scores_decay_mult",
            logger='current', level=logging.WARNING)


def check_finite(active: Layers, iteration: int, epoch: int) -> None:
    """``FloatingPointError`` naming the layers with a non-finite alive score."""
    with torch.no_grad():
        # Fast path: one reduction per layer, one sync (NaN / inf propagate).
        total = torch.stack([layer.scores.sum() for _, layer in active]).sum()
        if bool(torch.isfinite(total)):
            return
        bad = [name for name, layer in active
               if not bool((torch.isfinite(layer.scores) | ~layer.alive).all())]
    if bad:  # else: finite but huge scores overflowed the sum
        raise FloatingPointError(
            f'LBCHook: non-finite LBC scores at iteration {iteration} (epoch '
            f'{epoch}) in {len(bad)} layers: {", ".join(bad)}; {FIX}')


def check_has_lbc_layers(layers: Layers) -> None:
    """Fail when the model has no sparse LBC layer for the hook to drive."""
    if not layers:
        raise RuntimeError(
            "LBCHook: the model has no sparse LBC layer (NMSparseConv / "
            "NMSparseLinear with method='lbc' and in-channels divisible by M); "
            'check conv_cfg / the NMSparsify transform in the config')


def log_start(layers: Layers, schedule, finished: Set[str]) -> None:
    """The line at ``before_train``: layers, groups and the schedule."""
    groups = sum(layer.sparsity.num_alive.numel() for _, layer in layers)
    print_log(f'LBCHook: {len(layers)} LBC layers ({groups} groups); candidates '
              f'removed {schedule.describe()}; {len(finished)} layers already N:M',
              logger='current')


def check_finished(layers: Layers, finished: Set[str]) -> None:
    """``require_finished``: ``RuntimeError`` naming the layers not at one
    candidate per group."""
    unfinished = [f'{name} (up to {int(layer.sparsity.num_alive.max())} of '
                  f'{layer.sparsity.num_candidates} candidates alive)'
                  for name, layer in layers if name not in finished]
    if unfinished:
        raise RuntimeError(
            f'LBCHook(require_finished=True): {len(unfinished)} of '
            f'{len(layers)} LBC layers are not at one candidate per group, '
            f'so their masks are not those of a finished LBC run (was the '
            f'checkpoint loaded, e.g. through init_cfg=dict(type=\'Pretrained\', '
            f'prefix=\'backbone.\', ...), and did its run reach t_f?): '
            + ', '.join(unfinished))


def dense_fallbacks(model: nn.Module) -> Tuple[List[str], int]:
    """The sparse-typed layers that stayed dense (Cin not divisible by M), as
    ``'name (shape) (n:m)'``, and the number of sparse-typed layers."""
    layers = list(sparse_layers(model, only_sparse=False))
    return [f'{name} {tuple(layer.weight.shape)} ({layer.n}:{layer.m})'
            for name, layer in layers if not layer.is_sparse], len(layers)


def log_dense_fallbacks(model: nn.Module) -> None:
    """Warn, naming them, about the sparse-typed layers that stayed dense."""
    dense, total = dense_fallbacks(model)
    if dense:
        print_log(f'LBCHook: {len(dense)} of {total} N:M layers stay dense (input '
                  f'channels not divisible by M): {", ".join(dense)}',
                  logger='current', level=logging.WARNING)


def log_frozen_layers(frozen: Sequence[str], mode: str,
                      relearned: Sequence[str]) -> None:
    """The lines on LBC layers with frozen weights (``frozen_layers=mode``);
    ``relearned``: layers that keep learning although ``mode`` is ``'asp'``."""
    for name in relearned if mode == 'asp' else ():
        print_log(f'LBCHook: frozen layer {name} has already removed candidates '
                  f"(resumed from a 'learn' run?); its scores keep learning",
                  logger='current', level=logging.WARNING)
    if frozen:
        what = ('take the magnitude (ASP) mask' if mode == 'asp' else
                'keep learning their scores')
        print_log(f'LBCHook: {len(frozen)} LBC layers have frozen weights and '
                  f"{what} (frozen_layers='{mode}'): " + ', '.join(frozen),
                  logger='current')


def _measures(diag: dict) -> str:
    """A card step's settledness measures (docs/method.md, "Ties"), in words."""
    margin = diag.get('margin_steps')
    return (f'decision margin {"n/a" if margin is None else f"{margin:.3g}"} '
            f'score steps ({diag["tied"]:.1%} of the decisions on exactly equal '
            f'scores, {diag["unmoved"]:.1%} in groups whose scores never moved), '
            f'kept = magnitude choice in {diag["agree_mag"]:.1%} of groups (chance '
            f'{diag["chance_agree"]:.1%}), score spread {diag["score_spread"]:.3g} '
            f'x init')


def log_card_step(diag: dict, cards: Sequence[int]) -> None:
    """The line of a card step (``diag``: :class:`SettlednessTracker` + iter, t)."""
    print_log(f'LBCHook: card step at iteration {int(diag["iter"])} '
              f'(t={diag["t"]:g}), card {"/".join(str(c) for c in cards)}: '
              f'{_measures(diag)}', logger='current')


def _tie_breaks(layers: Layers) -> str:
    return '/'.join(sorted({layer.sparsity.tie_break
                            for _, layer in layers})) or 'index'


def log_settledness(diag: dict, unsettled_steps: float, layers: Layers = ()) -> None:
    """The end-of-training line on the last card step; a warning when half the
    decisions had no gradient evidence (scores never moved) or when the moved
    groups' median margin is below ``unsettled_steps`` (a short window)."""
    margin: Optional[float] = diag.get('margin_steps')
    unmoved = diag['unmoved']
    verdict = ''
    if unmoved >= 0.5:
        verdict += (f'; {unmoved:.1%} of the decisions were in groups whose '
                    f'scores never moved (no gradient: frozen or zero-initialised '
                    f'weights, taps that only see padding; or score steps below '
                    f"float32's resolution of the scores: a score lr too small for "
                    f'the score gradients, raise scores_lr_mult), decided by '
                    f"tie_break='{_tie_breaks(layers)}', not learned")
    if margin is not None and margin < unsettled_steps:
        verdict += (f'; the groups that learned have a margin below '
                    f'{unsettled_steps:g} score steps '
                    f'({diag["tied"] - unmoved:.1%} of the decisions tied): the '
                    f'final choice rests on a few iterations of score movement; a '
                    f'longer removal window (t_f) or a larger score lr '
                    f'(scores_lr_mult) gives the scores more gradient to decide on')
    print_log(f'LBCHook: settledness of the last card step (iteration '
              f'{int(diag["iter"])}): {_measures(diag)}{verdict}', logger='current',
              level=logging.WARNING if verdict else logging.INFO)
