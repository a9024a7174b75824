# ResNet-50 ImageNet-1k, made 2:4 with LBC in a short fine-tune of mmpretrain's trained
# dense model (the path apex ASP and ModelOpt take): start from the model zoo's
# weights, learn which 2 of every 4 weights to keep, recover under the fixed masks.
#
# Not trained by this project yet: no result is claimed. The dense starting point is
# mmpretrain's model zoo resnet50_8xb32_in1k (its metafile: top-1 76.55 %).
#
# Hyper-parameters a user changes (each choice in one line):
#   load_from       the dense classifier; its convs load into the LBC layers, which
#                   start with every candidate alive (one log line says so).
#   max_epochs=30   a quarter of the 120-epoch from-scratch recipe: the weights are
#                   trained; only the masks are new.
#   LBCHook t_f=15  removal over the first half of the fine-tune (the paper's
#                   proportion), card once per epoch as the authors' code; epochs
#                   15-30 recover under the final 2:4 masks.
#   lr 0.01         a tenth of the from-scratch 0.1 (trained weights), 1 warm-up
#                   epoch, then cosine to 0 over the rest.
_base_ = './lbc-2of4_resnet50_8xb32_in1k.py'

load_from = ('https://download.openmmlab.com/mmclassification/v0/resnet/'
             'resnet50_8xb32_in1k_20210831-ea4938fc.pth')

train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
optim_wrapper = dict(optimizer=dict(lr=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=29, eta_min=0.0, by_epoch=True, begin=1,
         end=30, convert_to_iter_based=True),
]

# The base's list is replaced (mmengine replaces lists): every hook is listed again.
custom_hooks = [
    dict(type='FiniteCheckHook', interval=50),
    dict(type='LBCHook', t_i=0, t_f=15, unit='epoch', power=3, card_update='epoch'),
]
