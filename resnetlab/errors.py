"""The one exception type the command line turns into a single clear line."""


class ResnetlabError(Exception):
    """A user-facing error: bad input, a missing file, an unknown name."""
