"""Helpers shared by the tests."""
import re


def exactly(message):
    """A ``pytest.raises(..., match=...)`` pattern that matches ``message`` whole and literally:
    an error's text is part of the interface, so tests check all of it."""
    return "^" + re.escape(message) + "$"
