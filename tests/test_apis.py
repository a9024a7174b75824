"""lbc_mm.apis: the one config -> model -> checkpoint module, and the checkpoint
reader beneath it (lbc_mm.checkpoint_io); both sit below every other lbc_mm module."""
import ast
import os

import pytest
from mmengine.config import Config

import lbc_mm  # noqa: F401
from lbc_mm.apis import build_model

TINY = dict(
    model=dict(type='ImageClassifier',
               backbone=dict(type='ResNet', depth=18, num_stages=1, strides=(1, ),
                             dilations=(1, ), out_indices=(0, ), base_channels=8),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=3, in_channels=8)))


def test_build_model_uses_the_configs_default_scope():
    model, scope = build_model(Config(dict(TINY, default_scope='mmpretrain')))
    assert scope == 'mmpretrain' and type(model).__name__ == 'ImageClassifier'
    assert not model.training


def test_build_model_without_default_scope_is_one_line():
    with pytest.raises(ValueError, match='sets no default_scope') as info:
        build_model(Config(TINY))
    assert '\n' not in str(info.value)


def lbc_mm_imports(module: str):
    """The lbc_mm modules ``lbc_mm/<module>.py`` imports (anywhere in the file)."""
    path = os.path.join(os.path.dirname(lbc_mm.__file__), f'{module}.py')
    tree = ast.parse(open(path).read())
    names = [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             if n.level or (n.module or '').startswith('lbc_mm')]
    names += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
              for a in n.names if a.name.startswith('lbc_mm')]
    return names


@pytest.mark.parametrize('module, allowed', [('checkpoint_io', []),
                                             ('apis', ['checkpoint_io'])])
def test_apis_and_the_checkpoint_reader_import_no_other_lbc_mm_module(module,
                                                                       allowed):
    assert lbc_mm_imports(module) == allowed
