# ResNet-50 ImageNet-1k, every backbone conv 4:8 sparse, trained with LBC.
#
# Paper target: the paper gives no 4:8 number; none claimed.
#
# Hyper-parameters a user changes (the rest is ./_base_/lbc_resnet50_recipe.py):
#   model.backbone.conv_cfg  n=4, m=8: C(8,4)=70 candidates per group of 8 input
#                            channels; the 7x7 stem and the fc classifier stay dense.
#   LBCHook                  removal window t_i=0 -> t_f=60 epochs, p=3; card
#                            recomputed once per epoch (card_update='epoch', the
#                            authors' stepping).
#   schedule                 120 epochs, SGD 0.9, lr 0.1 / batch 256 (8 x 32), 5 warm-up
#                            epochs + cosine, weight decay 1e-4 (authors' code; the
#                            paper text says 5e-4), none on BatchNorm, label
#                            smoothing 0.1.
#   scores                   the weights' lr, momentum and weight decay
#                            (scores_decay_mult=1.0, authors' code) until one
#                            candidate is left: decay makes a score a recent, not a
#                            lifetime, sum of its gradient.
_base_ = './_base_/lbc_resnet50_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(n=4, m=8)))
