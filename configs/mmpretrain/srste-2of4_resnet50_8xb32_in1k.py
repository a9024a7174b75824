# ResNet-50 ImageNet-1k, SR-STE 2:4 baseline (lambda_w 2e-4; 0 or method='ste' is
# plain STE) on the shared recipe, to compare with the LBC 2:4 config (./README.md).
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
