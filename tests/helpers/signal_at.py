"""Run the resnetlab command line, sending this process a signal right after training step N.

    python tests/helpers/signal_at.py KILL:9 train ...   # SIGKILL after step 9
    python tests/helpers/signal_at.py INT:3 train ...    # Ctrl-C after step 3

The fault is planted from here, through the loop's per-step hook; nothing of it ships in the
package.
"""

from __future__ import annotations

import os
import signal
import sys


def plant(spec: str) -> None:
    """Make every training run of this process signal itself after step N ("KILL:N", "INT:N")."""
    from resnetlab.train import loop

    kind, _, at = spec.partition(":")
    sig = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[kind.upper()]

    def on_step_end(self) -> None:
        if self.state.step == int(at):
            os.kill(os.getpid(), sig)

    loop.Trainer.on_step_end = on_step_end


if __name__ == "__main__":
    from resnetlab.cli import main

    plant(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
