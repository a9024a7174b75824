"""The method study: N:M methods (dense / LBC / SR-STE / STE / ASP) compared on one
recipe and data set (``tools/compare_methods.py`` is its command line; usage,
outputs and results: docs/user_guides/study.md, faults:
docs/user_guides/failure_behaviour.md, training FLOPs: docs/training_cost.md).

Every (method, pattern, seed) is one training run of the config through the normal
training path, in a subprocess and work dir of its own
(``<work-dir>/<method>_<n>of<m>_seed<s>``); only the sparse layers' ``method`` /
``n`` / ``m``, the method's hook and the seed change (:func:`rewrite_config`). A run
with a ``result.json`` is not run again; a failed run is reported in the table and
the others go on (exit 1). The folder is locked while a study trains in it.
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
