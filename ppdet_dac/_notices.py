"""Known-harmless notices of Paddle and ppdet, dropped at import time (every other line passes).

* ``No ccache found ...``: Paddle's C++-extension helper warns at import; ccache only speeds up
  rebuilding the attention op, which ``make setup`` builds once.
* ``WARNING: OMP_NUM_THREADS set to N, not 1 ... PLEASE USE OMP_NUM_THREADS WISELY.``: Paddle
  prints it whenever OMP_NUM_THREADS > 1. The tools set OMP_NUM_THREADS to the core count for a
  single process (``tools/_threads.py``, which marks that with PPDET_DAC_SET_THREADS=1); the
  notice is dropped only then, so a value the user chose still gets Paddle's warning.
* ``Warning: Unable to use numba in PP-Tracking ...``: ppdet's multi-object-tracking code (not
  used here) prints it when numba is absent.
"""
import contextlib
import os
import re
import sys
import warnings

_ALWAYS = (re.compile(r"^Warning: Unable to use numba in PP-Tracking"),)
_OUR_THREADS = (re.compile(r"^WARNING: OMP_NUM_THREADS set to \d+, not 1\."),
                re.compile(r"^PLEASE USE OMP_NUM_THREADS WISELY\.$"))


def known_patterns(environ=None):
    """The line patterns dropped in this process (see the module docstring)."""
    environ = os.environ if environ is None else environ
    return _ALWAYS + (_OUR_THREADS if environ.get("PPDET_DAC_SET_THREADS") == "1" else ())


class _LineFilter:
    """A text stream that forwards whole lines to ``stream`` unless one of ``patterns`` matches."""

    def __init__(self, stream, patterns):
        self.stream, self.patterns, self.pending = stream, patterns, ""

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if not any(p.search(line) for p in self.patterns):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self):
        if self.pending:
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def __getattr__(self, name):   # fileno, isatty, encoding, ...
        return getattr(self.stream, name)


@contextlib.contextmanager
def known_notices_dropped():
    """Within the block, drop the known notices from stdout, stderr and Python warnings."""
    patterns = known_patterns()
    out, err = _LineFilter(sys.stdout, patterns), _LineFilter(sys.stderr, patterns)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"No ccache found", category=UserWarning)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                yield
            finally:
                out.flush()
                err.flush()
