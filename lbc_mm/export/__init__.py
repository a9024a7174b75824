"""Export: bake N:M masks, verify N:M, stock checkpoint, compressed N:M format."""
from .bake import SPARSE_ONLY_KEYS, NotNMError, densify_model, nm_violations
from .compressed import (
    compress_state_dict,
    compress_weight,
    decompress_state_dict,
    decompress_weight,
    index_bits,
    load_compressed,
    pack_bits,
    unpack_bits,
)
from .convert import export_checkpoint, format_table

__all__ = [
    'NotNMError', 'SPARSE_ONLY_KEYS', 'compress_state_dict', 'compress_weight',
    'decompress_state_dict', 'decompress_weight', 'densify_model', 'export_checkpoint',
    'format_table', 'index_bits', 'load_compressed', 'nm_violations', 'pack_bits',
    'unpack_bits'
]
