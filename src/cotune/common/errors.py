"""The root of cotune's own expected failures, so a CLI can report them in one line."""


class CotuneError(Exception):
    """A failure cotune explains itself (bad input, refused request, unusable state)."""
