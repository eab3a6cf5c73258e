"""The one exception type the library raises for bad input; the CLI prints it as one line."""

from __future__ import annotations


class ResnetlabError(ValueError):
    """A user-facing error: bad input, a missing file, an unknown name.

    A ValueError, so code that catches ValueError for bad values keeps working. `argument` names
    the Python argument a message begins with, so that the command line can show its flag
    instead (`batch_size must be positive` reads `--batch-size must be positive` there)."""

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument

    def for_command_line(self) -> str:
        """The message with its leading argument name written as the command line's flag."""
        text = str(self)
        arg = self.argument
        if arg and text.startswith(arg + " "):
            return "--" + arg.replace("_", "-") + text[len(arg) :]
        return text
