"""Shared fixtures: a tiny ResNet classifier config (stock and N:M) + checkpoints."""
import pytest
import torch

from lbc_mm.apis import build_model, load_config
from lbc_mm.layers import sparse_layers

STOCK = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ),
                  base_channels=16),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=128))
"""


def sparse_cfg_text(n=2, m=4, method='lbc'):
    return STOCK.replace(
        "base_channels=16),",
        f"base_channels=16, conv_cfg=dict(type='NMSparseConv', n={n}, m={m}, "
        f"method='{method}')),")


def write_cfg(folder, name, text):
    path = folder / name
    path.write_text(text)
    return str(path)


def make_checkpoint(cfg_path, out_path, finish=True, seed=0):
    """An mmengine-style checkpoint of the N:M config, LBC removal finished."""
    torch.manual_seed(seed)
    model, _ = build_model(load_config(cfg_path))
    for _name, layer in sparse_layers(model):
        if layer.method == 'lbc':
            with torch.no_grad():
                layer.scores.uniform_(0.1, 1.0)
            if finish:
                layer.sparsity.remove_candidates(1)
    torch.save({'meta': {'epoch': 3, 'iter': 30, 'dataset_meta': {'classes': ['a']}},
                'state_dict': model.state_dict(),
                'optimizer': {'state': {}, 'param_groups': []}}, out_path)
    return model


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny')
    stock = write_cfg(folder, 'stock.py', STOCK)
    sparse = write_cfg(folder, 'sparse.py', sparse_cfg_text())
    ckpt = str(folder / 'epoch_3.pth')
    model = make_checkpoint(sparse, ckpt)
    return dict(folder=folder, stock=stock, sparse=sparse, ckpt=ckpt,
                model=model.eval())
