"""The one exception type the library raises for bad input; the CLI prints it as one line."""


class ResnetlabError(ValueError):
    """A user-facing error: bad input, a missing file, an unknown name.

    A ValueError, so code that catches ValueError for bad values keeps working."""
