"""A poisoned checkpoint for the weights-only tests: its pickle calls
``os.mkdir(marker)`` (harmless, but the marker folder shows that the file's code
ran). Weights-only loading must refuse it naming :data:`GLOBAL`."""
import os
import os.path as osp

import torch

#: How torch's weights-only unpickler names ``os.mkdir`` (pickled as posix.mkdir).
GLOBAL = 'GLOBAL posix.mkdir'


class _Mkdir:
    """Unpickles as ``os.mkdir(marker)``: code a checkpoint must never run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


def poison(path, marker, state_dict=None) -> str:
    """Save a checkpoint whose ``meta`` runs ``os.mkdir(marker)`` when unpickled.

    Returns:
        str: ``path``.
    """
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    torch.save({'state_dict': state_dict if state_dict is not None else {},
                'meta': {'hook': _Mkdir(str(marker))}}, str(path))
    return str(path)


def assert_refused(message, marker) -> None:
    """One line naming the global, without torch's ``weights_only`` advice, and the
    marker was not made."""
    text = str(message)
    assert len(text.strip().splitlines()) == 1, text
    assert GLOBAL in text and 'refused' in text, text
    assert 'weights_only' not in text
    assert not osp.exists(str(marker)), 'the checkpoint ran its code'
