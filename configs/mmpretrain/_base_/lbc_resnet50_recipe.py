# The shared recipe (./resnet50_nm_recipe.py) plus LBC (../README.md "Recipe"):
# LBCHook t_i=0 -> t_f=60 epochs, p=3, card_update='epoch'; scores with the weights'
# lr, momentum and decay (scores_decay_mult=1.0) until one candidate is left.
_base_ = './resnet50_nm_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(method='lbc')))

optim_wrapper = dict(
    constructor='LBCOptimWrapperConstructor',
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=1.0))

custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(
        type='LBCHook',
        t_i=0,
        t_f=60,
        unit='epoch',
        power=3,
        card_update='epoch')
]
