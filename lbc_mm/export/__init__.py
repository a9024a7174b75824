"""Export: bake N:M masks, verify N:M, stock checkpoint, compressed N:M format."""
from .bake import (SPARSE_ONLY_KEYS, NotNMError, densify_model, nm_violations,
                   plain_layer)
from .build import (CheckpointMismatchError, build_model, check_checkpoint,
                    load_checkpoint_into, load_config, read_checkpoint,
                    resolve_config, verify_archive)
from .compressed import (compress_state_dict, compress_weight, decompress_state_dict,
                         decompress_weight, index_bits, load_compressed, pack_bits,
                         unpack_bits)
from .convert import export_checkpoint, format_table, parse_pattern
from .io import atomic_torch_save, atomic_write, atomic_write_all

__all__ = [
    'CheckpointMismatchError', 'NotNMError', 'SPARSE_ONLY_KEYS', 'atomic_torch_save',
    'atomic_write', 'atomic_write_all', 'build_model', 'check_checkpoint',
    'compress_state_dict', 'compress_weight',
    'decompress_state_dict', 'decompress_weight', 'densify_model', 'export_checkpoint',
    'format_table', 'index_bits', 'load_checkpoint_into', 'load_compressed',
    'load_config', 'nm_violations', 'pack_bits', 'parse_pattern', 'plain_layer',
    'read_checkpoint', 'resolve_config', 'unpack_bits', 'verify_archive'
]
