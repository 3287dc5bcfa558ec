"""The two ways a request can fail before or outside a run: bad input (exit 2) and a system
that does not answer (exit 1)."""


class BadInput(Exception):
    """Exit 2: the user asked for something that is not allowed."""


class Unreachable(Exception):
    """Exit 1: a system the command needs does not answer."""
