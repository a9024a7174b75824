"""Module size limits: a module that outgrows them is split or cut, not stretched.

No module of the package or the tools is over 350 lines, and no module of
``lbc_mm/deploy`` (code that only a GPU or TensorRT runs for real) over 300.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 350
DEPLOY_LIMIT = 300


def product_files():
    """The product code: the package's and the tools' Python and shell files."""
    yield from sorted((ROOT / 'lbc_mm').rglob('*.py'))
    for pattern in ('*.py', '*.sh'):
        yield from sorted((ROOT / 'tools').glob(pattern))


def line_count(path: Path) -> int:
    return path.read_text().count('\n')


@pytest.mark.parametrize('path', list(product_files()),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_module_within_its_limit(path):
    deploy = ROOT / 'lbc_mm' / 'deploy'
    limit = DEPLOY_LIMIT if deploy in path.parents else LIMIT
    assert line_count(path) <= limit, (
        f'{path.relative_to(ROOT)} has {line_count(path)} lines (limit {limit})')


def test_limits_see_the_product():
    """The walk finds the package and the tools (a moved tree would pass vacuously)."""
    names = {str(p.relative_to(ROOT)) for p in product_files()}
    assert {'lbc_mm/layers.py', 'lbc_mm/deploy/bench.py', 'tools/train.py',
            'tools/run_demo.sh'} <= names
