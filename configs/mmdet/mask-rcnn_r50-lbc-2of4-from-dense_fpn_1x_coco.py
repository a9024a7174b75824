# Mask R-CNN R50-FPN, made 2:4 with LBC in a short fine-tune of mmdet's trained dense
# model (the path apex ASP and ModelOpt take): start from the model zoo's weights,
# learn which 2 of every 4 backbone weights to keep, recover under the fixed masks.
#
# Not trained by this project yet: no result is claimed. The dense starting point is
# mmdet's model zoo mask-rcnn_r50_fpn_1x_coco (its metafile: box AP 38.2, mask AP 34.7).
#
# Hyper-parameters a user changes (each choice in one line):
#   load_from       the dense detector; its backbone convs load into the LBC layers,
#                   which start with every candidate alive (one log line says so).
#   init_cfg=None   the ImageNet backbone init is pointless under load_from.
#   max_epochs=6    half the 1x schedule: the weights are already trained; only the
#                   masks are new.
#   LBCHook t_f=3   removal over the first half of the fine-tune (the paper's
#                   proportion); epochs 3-6 recover under the final 2:4 masks.
#   lr 0.01         half the from-scratch 0.02 (trained weights; the pruned groups
#                   still need room to move), 500-iteration warm-up as mmdet's 1x.
#   lr step at 5    x0.1 for the last epoch, after the masks are fixed (1x: 8 and 11).
_base_ = './mask-rcnn_r50-lbc-2of4_fpn_1x_coco.py'

load_from = ('https://download.openmmlab.com/mmdetection/v2.0/mask_rcnn/'
             'mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth')

model = dict(backbone=dict(init_cfg=None))

train_cfg = dict(max_epochs=6, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=6, by_epoch=True, milestones=[5],
         gamma=0.1),
]

# The base's list is replaced (mmengine replaces lists): every hook is listed again.
custom_hooks = [
    dict(type='LBCHook', t_i=0, t_f=3, unit='epoch', power=3, frozen_layers='learn',
         card_update='iter'),
    dict(type='FiniteCheckHook', interval=50),
]
