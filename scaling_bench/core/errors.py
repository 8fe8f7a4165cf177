"""The one error type for the user's mistakes.

The CLI turns a ``UserError`` into one line on stderr and exit code 2; anything else is a bug and
keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a grid spec, a family name, a config value, a results file."""


class ConfigError(UserError):
    """A model config that cannot be built (raised in ``__post_init__``, at birth)."""
