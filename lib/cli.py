"""Entry point shared by every stage and tool: a user error is one line on stderr, a bug keeps its traceback."""

from __future__ import annotations

import sys
from typing import Callable

from lib.errors import UserError

EXIT_USER_ERROR = 2


def run(main: Callable[[], None]) -> None:
    """Call `main`; on `UserError` print `error: <message>` and exit with status 2."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
