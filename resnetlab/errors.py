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
        """The message with its leading argument name written as the command line's flag, on
        one line."""
        text = one_line(str(self))
        arg = self.argument
        if arg and text.startswith(arg + " "):
            return "--" + arg.replace("_", "-") + text[len(arg) :]
        return text


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters (such as a newline inside a file
    name) written as escapes, so that an error stays one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
