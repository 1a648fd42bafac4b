"""The error a user can fix (params, data, model files), told apart from a bug in the code."""


class UserError(ValueError):
    """Bad input: the message says what is wrong and what to do. Stages print it as one line, no traceback."""
