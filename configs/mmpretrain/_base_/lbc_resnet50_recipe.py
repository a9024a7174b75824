# The LBC ResNet-50 ImageNet recipe as the authors' released code runs it:
# ./resnet50_nm_recipe.py (120 epochs, SGD 0.9, lr 0.1, 5 warm-up epochs + cosine,
# weight decay 1e-4, no weight decay on BatchNorm, label smoothing 0.1, batch 256)
# plus LBC's candidate removal.
#
#   LBCHook   t_i=0, t_f=60 epochs (half of the 120), power p=3: the number of alive
#             candidates per group falls from C(M,N) to 1 over epochs 0-60, then the
#             scores freeze and epochs 60-120 train the weights under the fixed N:M
#             masks. card_update='epoch' (the authors' stepping): card is recomputed
#             once per epoch, at its start, so nothing is removed during epoch 0 and
#             a few candidates go at each epoch start; card_update='iter' (lbc_mm's
#             default) lowers it after every iteration instead (both agree at epoch
#             boundaries).
#   scores    in the optimizer with the weights' lr (scores_lr_mult=1.0), momentum
#             and weight decay 1e-4 (scores_decay_mult=1.0), as in the authors'
#             code, until one candidate is left (then frozen). The decay makes a
#             score a recent, not a lifetime, sum of its gradient, which changes
#             which candidates win; scores_decay_mult=0.0 gives the lifetime sum.
# Differences from the authors' code: none known in the settings above. Not compared
# with it: the data pipeline and model definition, which are mmpretrain's ResNet-50
# ImageNet ones (resnet50_8xb32-lbs_in1k).
_base_ = './resnet50_nm_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(method='lbc')))

# LBC scores: own param groups, the weights' lr and weight decay (lbc_mm/optim.py);
# merged with the recipe's paramwise_cfg (norm_decay_mult=0.0).
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
