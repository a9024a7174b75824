# ResNet-50 ImageNet-1k, every backbone conv 2:4 sparse, ASP-style one-shot (baseline).
#
# NVIDIA ASP (docs/method.md "Baselines"): the 2:4 magnitude mask (2 largest |w| of each
# group of 4) is computed once from the starting weights and kept fixed; only the
# surviving weights train. A magnitude mask of random weights is a random mask, so
# this config starts from the dense torchvision ImageNet ResNet-50 (ASP's protocol:
# prune a trained dense model, then re-train) and re-trains with the same recipe as
# the LBC configs (./_base_/resnet50_nm_recipe.py: 120 epochs, SGD 0.9, lr 0.1 /
# batch 256, 5 warm-up epochs + cosine, weight decay 1e-4, none on BatchNorm, label
# smoothing 0.1).
# Compare with ./lbc-2of4_resnet50_8xb32_in1k.py (LBC target: 77.2 % top-1 from
# scratch).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  n=2, m=4, method='asp'. Stem and fc stay dense.
#   model.backbone.init_cfg  the dense model the mask is taken from (set to None to
#                            mask the random initialisation instead).
_base_ = './_base_/resnet50_nm_recipe.py'

model = dict(
    backbone=dict(
        conv_cfg=dict(method='asp'),
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
