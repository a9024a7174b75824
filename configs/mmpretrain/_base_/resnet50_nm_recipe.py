# Shared N:M ResNet-50 ImageNet recipe (every method; ../README.md "Recipe"): 120
# epochs, SGD 0.9, lr 0.1 / batch 256, 5 warm-up epochs + cosine, weight decay 1e-4,
# none on BatchNorm, label smoothing 0.1, residual BatchNorms not zero-initialised.
# Leaf configs set the pattern / method in model.backbone.conv_cfg.
_base_ = 'mmpretrain::resnet/resnet50_8xb32-lbs_in1k.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        conv_cfg=dict(type='NMSparseConv', n=2, m=4, method='lbc'),
        zero_init_residual=False))

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.001,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=115,
        eta_min=0.0,
        by_epoch=True,
        begin=5,
        end=120,
        convert_to_iter_based=True),
]

train_cfg = dict(by_epoch=True, max_epochs=120, val_interval=1)

# FiniteCheckHook: stop on a non-finite loss or weights; checkpoints written atomically.
custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(type='FiniteCheckHook', interval=50)]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
