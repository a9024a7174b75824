# DeiT-small ImageNet-1k, LBC 2:4 on every block's qkv, proj, fc1, fc2 (NMSparsify;
# patch embedding and head dense), recipe and LBC settings of the authors' DeiT code:
# LBCHook t_f=200 of 300 epochs, p=4, card_update='epoch'; scores_decay_mult=1.0;
# EMAHook (decay 0.99996); drop path 0.1, 5 warm-up epochs, no gradient clipping,
# repeated augmentation. Train with --amp for their mixed precision (./README.md).
# Options of the wrapped model are under model.model (model.model.head.num_classes).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='NMSparsify',
    model=dict(
        _base_.model,
        backbone=dict(_base_.model.backbone, drop_path_rate=0.1)),
    n=2,
    m=4,
    method='lbc',
    include=[
        'backbone.layers.*.attn.qkv',
        'backbone.layers.*.attn.proj',
        'backbone.layers.*.ffn.layers.0.0',
        'backbone.layers.*.ffn.layers.1',
    ],
    exclude=['backbone.patch_embed', 'backbone.patch_embed.*', 'head.*'])

# LBC scores: own param groups, the weights' lr and weight decay (lbc_mm/optim.py);
# merged with the DeiT recipe's paramwise_cfg (no decay on norms, biases, tokens).
optim_wrapper = dict(
    constructor='LBCOptimWrapperConstructor',
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=1.0),
    clip_grad=None)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5)
]
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', shuffle=True))

# LBCHook comes before EMAHook: at equal priority it acts first.
custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(
        type='LBCHook',
        t_i=0,
        t_f=200,
        unit='epoch',
        power=4,
        card_update='epoch'),
    dict(type='EMAHook', momentum=4e-5, priority='ABOVE_NORMAL'),
    dict(type='FiniteCheckHook', interval=50),
]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
