"""tools/benchmark_train.py: dense vs sparse training steps side by side."""
import os
import subprocess
import sys


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
    rows = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ('dense', 'lbc'):
            name = ' '.join(fields[:len(fields) - 11])
            rows[name] = [float(x) for x in fields[-11:]]
    assert set(rows) == {'dense', 'lbc 2:4', 'lbc 1:4'}
    assert rows['dense'][1] == 1.0  # dense is its own reference
    assert rows['dense'][7] == 0.0  # and has no scores
    # The LBC extras are real: scores (G x C floats) take memory, and 1:4 has fewer
    # candidates per group (C(4,1)=4) than 2:4 (C(4,2)=6).
    assert rows['lbc 2:4'][7] > rows['lbc 1:4'][7] > 0
    assert rows['lbc 2:4'][5] > rows['dense'][5]  # peak memory grows
