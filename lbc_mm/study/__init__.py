"""The method study: N:M methods (dense / LBC / SR-STE / STE / ASP) compared on one
recipe and data set (``tools/compare_methods.py`` is its command line).

Every (method, pattern, seed) is one training run of CONFIG through the normal
training path (``tools/train.py``'s argument merging from :mod:`lbc_mm.cli`, data
check, Runner, hooks and end-of-training checks), in a subprocess of its own and a
work dir of its own, ``<work-dir>/<method>_<n>of<m>_seed<s>`` (``dense_seed<s>``).
Only the sparse layers' ``method`` / ``n`` / ``m`` and the seed change:

* the sparse layer configs of the model are found wherever the config sets them
  (``conv_cfg=dict(type='NMSparseConv', ...)`` of an mmpretrain / mmdet backbone, an
  ``NMSparseLinear`` layer config, or the ``NMSparsify`` model transform);
* ``lbc`` keeps (or adds, with its defaults) the ``LBCHook``; every other method
  drops it;
* ``srste`` keeps the config's ``srste_lambda`` (default 2e-4), ``ste`` is
  ``srste_lambda=0``, ``asp`` fixes the magnitude mask at the first training
  forward (of the config's initial weights: a random mask from scratch);
* ``dense`` has no sparse layer and no hook: ``conv_cfg`` becomes None, other
  sparse layer configs their ``Conv2d`` / ``Linear`` type, ``NMSparsify`` its inner
  model. Dense runs once per seed, not per pattern.

A run that finished (``result.json`` in its work dir) is not run again, so an
interrupted study continues where it stopped; a run that fails is reported in the
table (its log is ``run.log`` in its work dir) and the others go on; the study then
exits 1. One progress line per run. A pattern none of the sparse layers can hold
(input channels not divisible by M: they would all train dense) fails its runs
before training; layers that stay dense under a pattern are named in the JSON and
counted in the progress line.

Faults: a config without sparse layer configs is refused up front, in one line; the
study folder is locked (``.compare_methods.lock``), so a second study into the same
``--work-dir`` is refused in one line while the first trains; SIGTERM or Ctrl-C
stops the running run too (exit 143 / 130), and a rerun trains it again.

Per run: the last validation metrics the config's evaluator reports (``--metric``
picks the key; default ``accuracy/top1``, then ``coco/bbox_mAP``, then the first),
whether every sparse layer ended N:M (``nm_report``: at most N of every M kept),
wall time of the training, peak memory (``torch.cuda.max_memory_allocated`` on a
GPU, else the process' peak RSS), and for LBC ``LBCHook``'s settledness at its last
card step (how often the kept candidate is the magnitude choice, the decision margin
in iterations' worth of score movement and the share of decisions taken on exactly
equal scores; see ``lbc_mm/sparsity/diagnostics.py``).

Per run also its training FLOPs on lbc_mm's counting convention
(:mod:`lbc_mm.train_cost`, docs/training_cost.md). An LBC arm may carry ``LBCHook``
options (``lbc+t_f=0.05+noise_margin=2``, :func:`parse_arm`).

Outputs in the work dir (written atomically): ``compare_methods.md`` (markdown
table, mean ± sample std over seeds), ``compare_methods.json`` (every run and the
summary), ``compare_methods.png`` (metric per method and pattern, error bars) and
``compare_methods_windows.png`` (metric against training FLOPs).
"""
from .grid import (
    METHODS,
    grid,
    parse_arm,
    parse_patterns,
    pattern_name,
    rewrite_config,
    run_name,
    with_windows,
)
from .report import (
    markdown_table,
    pick_metric,
    summarize,
    write_chart,
    write_window_chart,
)
from .run import LOCK, RESULT, launch, lock_study, run_one, run_study

__all__ = [
    'LOCK', 'METHODS', 'RESULT', 'grid', 'launch', 'lock_study', 'markdown_table',
    'parse_arm', 'parse_patterns', 'pattern_name', 'pick_metric', 'rewrite_config',
    'run_name', 'run_one', 'run_study', 'summarize', 'write_chart',
    'with_windows', 'write_window_chart'
]
