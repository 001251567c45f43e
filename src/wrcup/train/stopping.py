"""Stopping a training run on SIGINT/SIGTERM with a checkpoint instead of losing the current step.

SIGINT (Ctrl-C) or SIGTERM during the training loop lets the current step finish, writes a resumable checkpoint
and raises :class:`TrainingInterrupted` (``wrcup train`` exits with 128 + the signal number). Further signals
while stopping are ignored, so a repeated Ctrl-C or a launcher that forwards the signal again cannot cut the
checkpoint write short; SIGKILL still can, and then the previous checkpoint stays whole (see
:mod:`wrcup.models.checkpoint`). Before the loop (loading, filling the target cache) signals act as usual: the
cache is written atomically. The previous handlers are restored when the run returns or raises.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`train` after SIGINT/SIGTERM, once the checkpoint of the last finished step is written.

    A KeyboardInterrupt, so code that stops on Ctrl-C stops here too. ``exit_code`` is 128 + the signal number
    (130 for SIGINT, 143 for SIGTERM); the message says the step, the checkpoint and how to resume.
    """

    def __init__(self, signum: int, step: int, steps: int, checkpoint: Path, run_dir: Path, is_main: bool = True):
        self.signum, self.step, self.steps, self.checkpoint, self.is_main = signum, step, steps, checkpoint, is_main
        name = signal.Signals(signum).name
        if step >= steps:
            text = f"stopped by {name} after the last step ({step}); final checkpoint: {checkpoint}"
        else:
            text = (f"stopped by {name} at step {step} of {steps}; checkpoint: {checkpoint}; "
                    f"resume with: wrcup train --resume {run_dir}")
        super().__init__(text)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """Notes the first SIGINT/SIGTERM instead of acting on it; the loop checks :attr:`signum` after each step.

    :meth:`arm` installs the handlers (only possible in the main thread; elsewhere signals keep their handlers),
    leaving the context restores the previous ones.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _note(self, signum, frame) -> None:
        # nothing else here: a handler runs between two bytecodes of the loop, which may be writing to stderr
        if self.signum is None:
            self.signum = signum

    def arm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._note)

    def __enter__(self) -> "StopOnSignal":
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
