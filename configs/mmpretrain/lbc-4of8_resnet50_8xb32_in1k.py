# ResNet-50 ImageNet-1k, LBC 4:8 on every backbone conv but the stem (./README.md).
_base_ = './_base_/lbc_resnet50_recipe.py'

model = dict(backbone=dict(conv_cfg=dict(n=4, m=8)))
