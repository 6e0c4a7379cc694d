"""What SIGINT, SIGTERM and SIGHUP mean to a jaxdl process, at every moment of a run.

    outside the epoch loop   stop at once: raise `Interrupted` where the program is (there is
                             nothing unsaved: before training nothing was computed, after it
                             the final checkpoint is already written)
    inside `fit`             record the signal, let the current epoch finish (a signal that
                             arrives during jax compilation or data loading is delivered when
                             that returns to Python), checkpoint, then raise `Interrupted`;
                             a second SIGINT (Ctrl-C twice) stops at once

`python -m jaxdl exp` wraps the whole experiment in `graceful()`, so the first rule covers
data loading and set-up; `fit` wraps its loop in `deferred()`, which installs the handler
itself when it is called from a notebook or a script. The CLI turns `Interrupted` into one
line and exit status 128 + signal number (143 for SIGTERM, 130 for SIGINT).

A signal whose handler was SIG_IGN when we started (`nohup` ignores SIGHUP; a background job
of a non-interactive shell ignores SIGINT) stays ignored. Handlers can only be installed
from the main thread; elsewhere both context managers do nothing.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from jaxdl.errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BEFORE_TRAINING = "before training started; nothing to checkpoint"


class _State:
    def __init__(self):
        self.installed = False  # our handler is in place
        self.deferring = 0  # depth of deferred() sections
        self.received: list[int] = []  # signals recorded while deferring
        self.context = BEFORE_TRAINING  # what an immediate interruption means now


_state = _State()


def _handler(signum, frame):
    if _state.deferring:
        if _state.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        _state.received.append(signum)
        return
    raise Interrupted(f"{signal.Signals(signum).name} {_state.context}", signum)


def set_context(text: str) -> None:
    """Say what an interruption outside the epoch loop means now (for its message)."""
    _state.context = text


@contextmanager
def graceful():
    """Install the handler for the duration; nested uses share the outermost one."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in HANDLED:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, _handler)
    _state.installed, _state.context = True, BEFORE_TRAINING
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _state.installed, _state.deferring, _state.received = False, 0, []
        _state.context = BEFORE_TRAINING


@contextmanager
def deferred():
    """Inside: record signals instead of acting on them; yields the list of signal numbers
    received (empty while none), which the epoch loop checks between epochs."""
    with graceful():
        main = threading.current_thread() is threading.main_thread()
        _state.deferring += main
        try:
            yield _state.received if main else []
        finally:
            _state.deferring -= main
            if not _state.deferring:
                _state.received = []
