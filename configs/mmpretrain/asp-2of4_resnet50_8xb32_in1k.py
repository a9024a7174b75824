# ResNet-50 ImageNet-1k, ASP one-shot 2:4 baseline: the magnitude mask of the dense
# torchvision ResNet-50 (init_cfg; None masks the random init), re-trained on the
# shared recipe (./README.md).
_base_ = './_base_/resnet50_nm_recipe.py'

model = dict(
    backbone=dict(
        conv_cfg=dict(method='asp'),
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')))
