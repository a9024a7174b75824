# The LBC ResNet-50 ImageNet recipe (ALGORITHM.md §9): ./resnet50_nm_recipe.py
# (120 epochs, SGD 0.9, lr 0.1, 5 warm-up epochs + cosine, weight decay 1e-4,
# label smoothing 0.1, batch 256) plus LBC's candidate removal.
#
#   LBCHook   t_i=0, t_f=60 epochs (half of the 120), power p=3: the number of alive
#             candidates per group falls from C(M,N) to 1 over epochs 0-60, then the
#             scores freeze and epochs 60-120 train the weights under the fixed N:M
#             masks. Scores get no weight decay (scores_decay_mult=0.0) and the
#             weights' lr (scores_lr_mult=1.0).
_base_ = './resnet50_nm_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(method='lbc')))

# LBC scores: own param groups, lr x1.0, no weight decay (lbc_mm/optim.py).
optim_wrapper = dict(
    constructor='LBCOptimWrapperConstructor',
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=0.0))

custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(
        type='LBCHook',
        t_i=0,
        t_f=60,
        unit='epoch',
        power=3)
]
