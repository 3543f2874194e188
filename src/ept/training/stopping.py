"""Stop a run at a step boundary, with a checkpoint of that step, on SIGTERM or Ctrl-C.

A cluster that preempts a job, `kill`, `timeout` or a stopped sweep sends SIGTERM; killed at once,
a run loses every step since its last checkpoint (up to `checkpoint_every`, or `eval_every`). With
`graceful_stop` around the training loop the first SIGTERM or SIGINT only sets a flag: the step
in progress ends, `last/` is written at it, and `StopRequested` ends the run, so the same command
resumes with no step lost or redone. A second Ctrl-C acts at once (a stop that hangs must stay
stoppable); a second SIGTERM does not, because one stop often sends two: `kill` of a sweep's
process group reaches each worker, and the sweep's death sends it another (PR_SET_PDEATHSIG).
SIGKILL stops at once. Only a single-process run stops this way: ranks of a multi-process run
could see the signal at different steps and must checkpoint the same one, so they keep the
default behaviour.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(KeyboardInterrupt):
    """The run stopped on a signal after checkpointing `step` (a KeyboardInterrupt, so whatever
    handles Ctrl-C handles it, and no `except Exception` records it as a failure)."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} (checkpointed)")
        self.signum, self.step = signum, step

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:  # the shell's convention for death by a signal: 143 SIGTERM, 130 SIGINT
        return 128 + self.signum


@dataclass
class StopFlag:
    signum: int | None = None  # the first signal received, None while none came


@contextlib.contextmanager
def graceful_stop(enabled: bool = True):
    """Yields a StopFlag that the first SIGTERM / SIGINT sets; the loop checks it at each step's end.
    A no-op flag outside the main thread (Python delivers signals there only) or when not enabled."""
    flag = StopFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None and signum == signal.SIGINT:
            signal.default_int_handler(signum, frame)  # a second Ctrl-C: KeyboardInterrupt at once
        flag.signum = flag.signum or signum

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield flag
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
