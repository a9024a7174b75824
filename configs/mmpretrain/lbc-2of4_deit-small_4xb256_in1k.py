# DeiT-small ImageNet-1k, transformer-block linears 2:4 sparse, trained with LBC.
#
# Paper target (ALGORITHM.md §9): top-1 80.1 % (SR-STE 2:4: 79.6 %).
#
# The model is mmpretrain's deit-small_4xb256_in1k wrapped in lbc_mm's NMSparsify
# transform, which builds it and swaps the matching nn.Linear layers:
#   sparse  every block's attn.qkv, attn.proj, ffn fc1 (ffn.layers.0.0) and fc2
#           (ffn.layers.1) (ALGORITHM.md §8);
#   dense   the patch embedding (backbone.patch_embed) and the classifier head.
# The recipe is DeiT's, unchanged: 300 epochs, AdamW lr 5e-4 x 1024/512, weight decay
# 0.05 (none on norms, biases, cls_token, pos_embed), 20 warm-up epochs + cosine,
# Mixup 0.8 / CutMix 1.0, label smoothing 0.1, grad clip 5.0, batch 1024 (4 x 256).
#
# Hyper-parameters a user changes:
#   model.n / model.m / model.method   the pattern (2:4 LBC).
#   model.include / model.exclude      fnmatch patterns of the swapped layers.
#   LBCHook t_i / t_f / power          removal window epochs 0 -> 150 (half of the 300
#                                      epochs, the paper's default), p=3 (the
#                                      authors' DeiT code used p=4: set power=4 to
#                                      follow it). Scores: no weight decay.
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

# LBC scores: own param groups, lr x1.0, no weight decay (lbc_mm/optim.py).
optim_wrapper = dict(
    constructor='LBCOptimWrapperConstructor',
    paramwise_cfg=dict(scores_lr_mult=1.0, scores_decay_mult=0.0))

custom_hooks = getattr(_base_, 'custom_hooks', []) + [
    dict(
        type='LBCHook',
        t_i=0,
        t_f=150,
        unit='epoch',
        power=3),
    dict(type='FiniteCheckHook', interval=50),
]
# FiniteCheckHook: stop on a non-finite loss (every iteration) or non-finite weights
# (every 50 iterations); AtomicCheckpointHook: checkpoints written atomically.
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
