"""Run the resnetlab command line, sending this process a signal right after training step N.

    python tests/helpers/signal_at.py KILL:9 train ...   # SIGKILL after step 9
    python tests/helpers/signal_at.py INT:3 train ...    # Ctrl-C after step 3

The fault is planted from here, as a callback at the trainer's on_step_end hook added to every
fit of this process; nothing of it ships in the package.
"""

from __future__ import annotations

import os
import signal
import sys


def plant(spec: str) -> None:
    """Make every training run of this process signal itself after step N ("KILL:N", "INT:N")."""
    from resnetlab.train import loop
    from resnetlab.train.callbacks import Callback

    kind, _, at = spec.partition(":")
    sig = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[kind.upper()]

    class Signal(Callback):
        def on_step_end(self, state) -> None:
            if state.step == int(at):
                os.kill(os.getpid(), sig)

    fit = loop.fit

    def fit_with_signal(*args, callbacks=None, **kwargs):
        return fit(*args, callbacks=[*(callbacks or []), Signal()], **kwargs)

    loop.fit = fit_with_signal


if __name__ == "__main__":
    from resnetlab.cli import main

    plant(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
