"""The `hostsnap-controller` command line: one module per group of commands."""


class CommandError(Exception):
    """The command cannot do what was asked; the message says why."""
