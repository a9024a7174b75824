"""Pure N:M sparsity math (no OpenMMLab imports): patterns, LBC, SR-STE."""
from .lbc import (
                  TIE_BREAKS,
                  LBCMaskFunction,
                  candidate_magnitude,
                  card,
                  card_at_epoch_start,
                  init_scores,
                  lbc_mask,
                  lbc_masked_weight,
                  removal_step,
)
from .patterns import (
                  candidate_matrix,
                  count_nm_violations,
                  from_groups,
                  magnitude_mask,
                  num_candidates,
                  to_groups,
                  validate_pattern,
)
from .srste import srste_masked_weight

__all__ = [
    'LBCMaskFunction',
    'TIE_BREAKS',
    'candidate_magnitude',
    'candidate_matrix',
    'card',
    'card_at_epoch_start',
    'count_nm_violations',
    'from_groups',
    'init_scores',
    'lbc_mask',
    'lbc_masked_weight',
    'magnitude_mask',
    'num_candidates',
    'removal_step',
    'srste_masked_weight',
    'to_groups',
    'validate_pattern',
]
