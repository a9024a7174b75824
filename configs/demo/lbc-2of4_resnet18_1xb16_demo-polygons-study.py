# Method study on a set where dense stays below 100 %: the study recipe of its _base_ on
# 5 polygon classes whose colour only partly says the class, with pixel noise (32 px,
# 60 train / 40 val per class: `tools/make_study_data.py data/demo_polygons`),
# mmpretrain's ResNet_CIFAR stem (3x3, stride 1: 32 px keeps its shapes), 5-way head,
# 10 epochs of 19 iterations, lr 0.1 (0.00625 did not learn the shapes in 190
# iterations); LBCHook unchanged (docs/training_cost.md).
_base_ = './lbc-2of4_resnet18_1xb16_demo-shapes-study.py'

data_root = 'data/demo_polygons'
num_classes = 5
max_epochs = 10

model = dict(backbone=dict(type='ResNet_CIFAR'), head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes)
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.1))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - 1,
        eta_min=0.0,
        by_epoch=True,
        begin=1,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
