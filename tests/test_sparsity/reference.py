"""Plain-loop reference implementation of docs/method.md (LBC, magnitude masks).

Deliberately slow and literal: Python loops over groups and candidates,
``itertools.combinations`` for the candidate subsets. Groups are built by explicit
index arithmetic, independent of ``lbc_mm.sparsity.patterns``.
"""
import itertools
import math

import torch


def ref_group_index(shape, m):
    """List of groups; each group is a list of m weight indices (tuples)."""
    groups = []
    if len(shape) == 2:
        out_c, cin = shape
        for o in range(out_c):
            for c0 in range(0, cin, m):
                groups.append([(o, c0 + j) for j in range(m)])
    else:
        out_c, cin, kh, kw = shape
        for o in range(out_c):
            for y in range(kh):
                for x in range(kw):
                    for c0 in range(0, cin, m):
                        groups.append([(o, c0 + j, y, x) for j in range(m)])
    return groups


def ref_candidates(n, m):
    return list(itertools.combinations(range(m), n))


def ref_mask(shape, alive, n, m):
    """alive: list (per group) of lists of bools (per candidate)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    cands = ref_candidates(n, m)
    for g, idx in enumerate(ref_group_index(shape, m)):
        for c, subset in enumerate(cands):
            if alive[g][c]:
                for j in subset:
                    mask[idx[j]] = True
    return mask


def ref_grads(weight, grad_eff, alive, n, m):
    """Straight-through gradients of docs/method.md §4, with loops."""
    mask = ref_mask(weight.shape, alive, n, m)
    grad_w = grad_eff * mask
    cands = ref_candidates(n, m)
    groups = ref_group_index(weight.shape, m)
    grad_s = torch.zeros(len(groups), len(cands), dtype=weight.dtype)
    for g, idx in enumerate(groups):
        for c, subset in enumerate(cands):
            if alive[g][c]:
                grad_s[g, c] = sum(weight[idx[j]] * grad_eff[idx[j]] for j in subset)
    return grad_w, grad_s


def ref_card(t, num_c, t_i, t_f, p):
    if t < t_i:
        return num_c
    if t >= t_f:
        return 1
    return 1 + math.ceil((num_c - 1) * (1 - (t - t_i) / (t_f - t_i))**p)


def ref_remove(scores, alive, keep, magnitude=None):
    """In place on python lists: keep the `keep` best alive candidates per group,
    ties -> larger magnitude (when given, (G, C) lists), then lower candidate
    index; removed scores are set to 0."""
    for g in range(len(scores)):
        alive_idx = [c for c in range(len(scores[g])) if alive[g][c]]
        mag = magnitude[g] if magnitude is not None else [0.0] * len(scores[g])
        # sort by (-score, -magnitude, index): highest score first
        ranked = sorted(alive_idx, key=lambda c: (-scores[g][c], -mag[c], c))
        kept = set(ranked[:keep])
        for c in range(len(scores[g])):
            if c not in kept:
                alive[g][c] = False
                scores[g][c] = 0.0


def ref_magnitude_mask(weight, n, m):
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    for idx in ref_group_index(weight.shape, m):
        mags = [abs(float(weight[i])) for i in idx]
        ranked = sorted(range(m), key=lambda j: (-mags[j], j))
        for j in ranked[:n]:
            mask[idx[j]] = True
    return mask
