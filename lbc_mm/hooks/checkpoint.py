"""AtomicCheckpointHook: training checkpoints that a crash never truncates."""
import glob
import os
import os.path as osp
from pathlib import Path
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..io import atomic_write

#: mmengine file backend name of :class:`AtomicLocalBackend`.
BACKEND_NAME = 'lbc_mm_atomic_local'
#: Name of mmengine's pointer to the newest checkpoint, in the work dir.
LAST_CHECKPOINT = 'last_checkpoint'


def atomic_put(data: bytes, path: Union[str, Path]) -> None:
    """Write ``data`` to ``path`` atomically (:func:`lbc_mm.io.atomic_write`)."""
    atomic_write(str(path), lambda f: f.write(data))


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but ``put`` / ``put_text`` are atomic."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_put(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        atomic_put(obj.encode(encoding), filepath)


register_backend(BACKEND_NAME, AtomicLocalBackend, force=True)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` with atomic writes and delete-after-write.

    mmengine's ``CheckpointHook`` writes ``iter_N.pth`` and ``last_checkpoint`` in
    place and, with ``max_keep_ckpts``, deletes the oldest checkpoint *before*
    writing the new one: a crash at the wrong instant leaves nothing to resume
    from. For a local folder this hook writes each file to a hidden temporary
    (``.iter_8.pth.XXXX.tmp``), fsyncs and renames it (``os.replace``), then
    replaces ``last_checkpoint`` the same way, and only then deletes checkpoints
    beyond ``max_keep_ckpts``; so ``--resume`` always finds a complete file.
    Temporaries a ``kill -9`` left are removed when the next run starts there.
    ``save_best`` files are written atomically too; a remote ``out_dir`` or
    explicit ``backend_args`` keep mmengine's behaviour.

    Takes exactly ``CheckpointHook``'s arguments; select it with
    ``default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', ...))``.
    """

    def before_train(self, runner) -> None:
        """Write through the atomic backend; remove temporaries of a killed run."""
        out_dir = self.out_dir if self.out_dir is not None else runner.work_dir
        self._atomic = (self.backend_args is None and self.file_client_args is None
                        and '://' not in str(out_dir))
        if self._atomic:
            self.backend_args = dict(backend=BACKEND_NAME)
        super().before_train(runner)
        if self._atomic and is_main_process():
            for pattern in ('.*.pth.*.tmp', f'.{LAST_CHECKPOINT}.*.tmp'):
                for folder in {self.out_dir, runner.work_dir}:
                    for stale in glob.glob(osp.join(glob.escape(folder), pattern)):
                        os.remove(stale)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not getattr(self, '_atomic', False):
            return super()._save_checkpoint_with_step(runner, step, meta)
        # The bookkeeping mmengine does first (it goes into the checkpoint's
        # message hub), but the old file is deleted only after the new one exists.
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_put(str(self.last_ckpt).encode(),
                   osp.join(runner.work_dir, LAST_CHECKPOINT))
        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(self.out_dir,
                                               self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints
                self.file_backend.rmtree(path)
