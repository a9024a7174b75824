# DeiT-small ImageNet-1k, transformer-block linears 2:4 sparse, trained with LBC.
#
# No accuracy target is claimed: a DeiT-small 2:4 LBC figure quoted earlier could not
# be verified (a later paper by the same group reports a lower one).
#
# The model is mmpretrain's deit-small_4xb256_in1k wrapped in lbc_mm's NMSparsify
# transform, which builds it and swaps the matching nn.Linear layers:
#   sparse  every block's attn.qkv, attn.proj, ffn fc1 (ffn.layers.0.0) and fc2
#           (ffn.layers.1);
#   dense   the patch embedding (backbone.patch_embed) and the classifier head.
# The recipe is mmpretrain's DeiT-small: 300 epochs, AdamW lr 5e-4 x 1024/512, weight
# decay 0.05 (none on norms, biases, cls_token, pos_embed), 20 warm-up epochs + cosine,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, grad clip 5.0, batch 1024 (4 x 256);
# LBC's settings follow the authors' DeiT code:
#   LBCHook      removal window t_i=0 -> t_f=200 of the 300 epochs, power p=4 (the
#                paper's defaults would be t_f=150, p=3); card recomputed once per
#                epoch, at its start (card_update='epoch', the authors' stepping;
#                'iter' lowers it after every iteration).
#   scores       the weights' lr, AdamW moments and weight decay 0.05
#                (scores_decay_mult=1.0) until one candidate is left: decay makes a
#                score a recent, not a lifetime, sum of its gradient.
#   model EMA    on: mmengine's EMAHook, momentum 4e-5 (an EMA decay of 0.99996)
#                every iteration; LBCHook gives the EMA model the trained model's
#                candidates, so it ends 2:4 too. mmpretrain's deit-small config had
#                dropped EMA (and drop path, which stays off here).
# Differences from the authors' code that are known: mmengine's EMAHook validates
# with the EMA weights and saves them as the checkpoint's state_dict (the raw weights
# under ema_state_dict); the rest of the recipe is mmpretrain's DeiT-small, not
# compared line by line with the authors' DeiT code.
#
# Hyper-parameters a user changes:
#   model.n / model.m / model.method   the pattern (2:4 LBC).
#   model.include / model.exclude      fnmatch patterns of the swapped layers.
#   LBCHook t_i / t_f / power / card_update, EMAHook momentum (see above).
# Note: options of the original model are now under model.model
# (e.g. --cfg-options model.model.head.num_classes=100).
_base_ = 'mmpretrain::deit/deit-small_4xb256_in1k.py'

custom_imports = dict(imports=['lbc_mm'], allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='NMSparsify',
    model=_base_.model,
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
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=1.0))

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
# FiniteCheckHook: stop on a non-finite loss (every iteration) or non-finite weights
# (every 50 iterations); AtomicCheckpointHook: checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
