"""One exit path for the pipeline's stages: an error the user can fix is one line, exit 1.

Bad params, bad data, missing files and wrong checkpoints raise ValueError or OSError
(FileNotFoundError, ...) with a message naming the file, the field and the fix; a loss that
is not finite raises FloatingPointError. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError, FloatingPointError)
TRACEBACK_ENV = "SAM2_VIDEO_TRACEBACK"  # set to 1 to see the traceback of a user error too


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Call a stage's `main`; a user error prints `<name>: error: <message>` and exits 1."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"{name}: error: {one_line(err)}", file=sys.stderr)
        sys.exit(1)
