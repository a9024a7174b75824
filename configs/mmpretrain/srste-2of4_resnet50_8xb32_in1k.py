# ResNet-50 ImageNet-1k, every backbone conv 2:4 sparse with SR-STE (baseline).
#
# The baseline LBC is compared with (Zhou et al., ICLR 2021; docs/method.md
# "Baselines"): every forward keeps the 2 largest |w| of each group of 4; backward
# dW = dW_eff + lambda_w * (1 - mask) * W. Same recipe as the LBC configs
# (./_base_/resnet50_nm_recipe.py: 120 epochs, SGD 0.9, lr 0.1 / batch 256, 5 warm-up
# epochs + cosine, weight decay 1e-4, none on BatchNorm, label smoothing 0.1) so the
# two compare side by side with ./lbc-2of4_resnet50_8xb32_in1k.py (LBC target: 77.2 %
# top-1).
#
# Hyper-parameters a user changes:
#   model.backbone.conv_cfg  n=2, m=4, method='srste', srste_lambda=2e-4 (0, or
#                            method='ste', gives plain STE). Stem and fc stay dense.
_base_ = './_base_/resnet50_nm_recipe.py'

model = dict(
    backbone=dict(
        conv_cfg=dict(
            _delete_=True,
            type='NMSparseConv',
            n=2,
            m=4,
            method='srste',
            srste_lambda=2e-4)))
