"""Export: bake N:M masks, verify N:M, stock checkpoint, compressed N:M format."""
from .bake import NotNMError, densify_model
from .compressed import compress_state_dict, decompress_state_dict, load_compressed
from .convert import export_checkpoint, format_table

__all__ = [
    'NotNMError', 'compress_state_dict', 'decompress_state_dict', 'densify_model',
    'export_checkpoint', 'format_table', 'load_compressed'
]
