# ResNet-50 ImageNet-1k, LBC 2:8 on every backbone conv but the stem (./README.md).
_base_ = './_base_/lbc_resnet50_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(n=2, m=8)))
