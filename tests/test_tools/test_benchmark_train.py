"""tools/benchmark_train.py: dense vs sparse training steps side by side."""
import importlib.util
import os
import subprocess
import sys

import pytest
from torch import nn

from lbc_mm.layers import NMSparseLinear
from lbc_mm.step_cost import Variant


def _tool(repo_root):
    spec = importlib.util.spec_from_file_location(
        'lbc_tools_benchmark_train', os.path.join(repo_root, 'tools',
                                                  'benchmark_train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_prints_dense_and_sparse_rows_with_ratios(repo_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(repo_root, 'tools', 'benchmark_train.py'),
         'mmpretrain::resnet/resnet18_8xb16_cifar10.py', '--batch-size', '2',
         '--img-size', '32', '--steps', '1', '--warmup', '0', '--methods', 'lbc',
         '--patterns', '2:4,1:4', '--threads', '1'],
        capture_output=True, text=True, timeout=600, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Row: model name (1-2 fields), step ms, x dense, cpu ms, x dense, peak MB,
    # x dense, saved MB, scores, grad, momentum, alive.
    rows, flops = {}, {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if ': training step ' in line:  # per-step FLOPs (docs/training_cost.md)
            label, rest = line.split(': training step ')
            flops[label] = float(rest.split()[0])
        elif fields and fields[0] in ('dense', 'lbc'):
            name = ' '.join(fields[:len(fields) - 11])
            rows[name] = [float(x) for x in fields[-11:]]
    assert set(rows) == {'dense', 'lbc 2:4', 'lbc 1:4'}
    assert rows['dense'][1] == 1.0  # dense is its own reference
    assert rows['dense'][7] == 0.0  # and has no scores
    # The LBC extras are real: scores (G x C floats) take memory, and 1:4 has fewer
    # candidates per group (C(4,1)=4) than 2:4 (C(4,2)=6).
    assert rows['lbc 2:4'][7] > rows['lbc 1:4'][7] > 0
    assert rows['lbc 2:4'][5] > rows['dense'][5]  # peak memory grows
    # Training FLOPs per step: LBC starts dense (every candidate alive) and ends at
    # the N:M share of the sparse layers' GEMMs; 1:4 ends below 2:4.
    start, end = (flops['lbc 2:4 (start, all candidates alive)'],
                  flops['lbc 2:4 (end, N:M)'])
    assert start == flops['dense'] > end > flops['lbc 1:4 (end, N:M)']


def test_optimizer_is_the_training_constructor_with_its_defaults(repo_root):
    """The scores decay like the weights (``scores_decay_mult=1.0``), as in training."""
    model = nn.Sequential(NMSparseLinear(8, 4, n=2, m=4, method='lbc'))
    optim = Variant('lbc 2:4', model, {}).optim
    decay = {id(p): group['weight_decay'] for group in optim.param_groups
             for p in group['params']}
    assert decay[id(model[0].scores)] == decay[id(model[0].weight)] == 1e-4


@pytest.mark.parametrize('args, line', [
    (['--patterns', '3:2'], "error: --patterns: pattern '3:2' is not a valid N:M"),
    (['--methods', 'lbx'], "error: --methods: unknown method 'lbx', expected a comma "
     'list of lbc, srste, ste, asp'),
    (['--steps', '0'], 'error: --steps must be >= 1, got 0'),
    (['--batch-size', '0'], 'error: --batch-size must be >= 1, got 0'),
])
def test_bad_arguments_are_one_line_before_any_model_is_built(repo_root, capsys,
                                                              args, line):
    with pytest.raises(SystemExit) as info:
        _tool(repo_root).parse_args(['no_such_config.py'] + args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count('\n') == 1, err


def test_bad_argument_from_the_command_line(repo_root):
    proc = subprocess.run(
        [sys.executable, os.path.join(repo_root, 'tools', 'benchmark_train.py'),
         'no_such_config.py', '--patterns', '3:2'],
        capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --patterns: pattern '3:2'")
    assert proc.stderr.count('\n') == 1, proc.stderr
