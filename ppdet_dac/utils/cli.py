"""The command-line tools' way of ending on a user error: one line, no traceback.

``run_cli(main)`` (the last line of every script in tools/ and deploy/) calls ``main()`` and
exits with its return value. An error caused by what the user gave (a config key or value, a
missing or refused file, bad data, a folder that cannot be written) ends the tool with one line
``<tool>: error: <message>`` on stderr and exit status 2, as argparse ends a command line it
cannot parse: nothing was done because of the input (1 stays for a crash, which Python reports
with status 1, and for the inference tools' "some files were skipped"); ``--debug`` (taken out of ``sys.argv`` before ``main`` parses it) or ``-v`` /
``--verbose`` also print the traceback. Ctrl-C ends with one line and status 130. Any other
exception is a bug and keeps its full traceback.

SIGTERM (what ``paddle.distributed.launch`` sends the other ranks when one fails or on Ctrl-C)
gets its default action back: the process ends at once, as with Paddle's own handler, without
that handler's ``FatalError: `Termination signal` is detected`` report and empty C++ stack. The
handlers of a crash (SIGSEGV, SIGABRT, ...) stay Paddle's.

User errors are ``UserError`` (base class of the project's own error classes that are about the
input, e.g. ``PretrainWeightsError``), ``ValueError`` (every config check, weights that do not
fit, refused files), ``OSError`` (a missing file or folder, a permission refused, a server that
does not answer) and ``FloatingPointError`` (the NaN guard of training, which names the epoch
and iteration).
"""

import os
import re
import signal
import sys
import traceback

__all__ = ["UserError", "USER_ERRORS", "EXIT_USER_ERROR", "EXIT_INTERRUPTED", "run_cli"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
DEBUG_FLAG = "--debug"
_TRACEBACK_FLAGS = (DEBUG_FLAG, "-v", "--verbose")


class UserError(Exception):
    """Mixed into an error class whose message names a problem of the user's input."""


USER_ERRORS = (UserError, ValueError, OSError, FloatingPointError)


def _tool_name():
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "ppdet_dac"


def _one_line(err):
    """The message of ``err`` on one line. Paddle's DataLoader re-raises a worker's error with
    that worker's traceback in the message: its last line, the worker's own error, is taken
    (without the exception's name)."""
    text = str(err)
    if "Traceback (most recent call last):" in text:
        text = [line for line in text.splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+: ", "", text.strip(), count=1)
    return " ".join(text.split()) or type(err).__name__


def run_cli(main, exit=sys.exit):
    """``exit(main())`` (a status when main returns an int, else 0), ending a user error or
    Ctrl-C with one line (module docstring);
    ``exit`` is the function that ends the process with a status."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    debug = any(arg in _TRACEBACK_FLAGS for arg in sys.argv[1:])
    sys.argv[1:] = [arg for arg in sys.argv[1:] if arg != DEBUG_FLAG]
    try:
        code = main()
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{_tool_name()}: interrupted", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        message = _one_line(err)
        print(f"{_tool_name()}: error: {message}", file=sys.stderr, flush=True)
        code = EXIT_USER_ERROR
    exit(code if isinstance(code, int) and not isinstance(code, bool) else 0)
