"""Known-harmless notices of Paddle and ppdet, dropped at import time (every other line passes).

* ``No ccache found ...``: Paddle's C++-extension helper warns at import; ccache only speeds up
  rebuilding the attention op, which ``make setup`` builds once.
* ``WARNING: OMP_NUM_THREADS set to N, not 1 ... PLEASE USE OMP_NUM_THREADS WISELY.``: Paddle
  prints it whenever OMP_NUM_THREADS > 1. The tools set OMP_NUM_THREADS to the core count for a
  single process (``tools/_threads.py``, which marks that with PPDET_DAC_SET_THREADS=1); the
  notice is dropped only then, so a value the user chose still gets Paddle's warning.
* ``Warning: Unable to use numba in PP-Tracking ...``: ppdet's multi-object-tracking code (not
  used here) prints it when numba is absent.

For the whole process (``drop_known_warnings``, at import; Python warnings filtered by message):

* ``No ccache found``: also when the attention op library is loaded later, at the first forward.
* ``When training, we now always track global mean and variance.``: Paddle's BatchNorm says it at
  every training forward (shown again after each evaluation, whose warning filters reset
  Python's once-per-place record); it describes Paddle's usual BatchNorm, whose running
  statistics are what the backbones from scratch need (docs/training.md).
* ``Currently not a parallel execution environment, `paddle.distributed.init_parallel_env` will
  not do anything.``: a one-process run calls it like a launched one; nothing is missing.

``parallel_init_quiet`` (around ``init_parallel_env``): Paddle's ``Modified FLAGS detected``
banner lists the flags that differ from their defaults; ``FLAGS_enable_pir_in_executor`` is set
by Paddle itself at import (3.3), so a banner of that flag alone is dropped. A flag the user set
keeps the whole banner.

At export (``export_notices_dropped``), Paddle 3.3's PIR tracing says three things that do not
concern the exported graph: its C++ log line "Paddle static graph(PIR) not support input out
tensor for now!!!!!", the Python warning "Tensor do not have 'place' interface for pir graph
mode" (its own full_like/zeros_like ask for a device while tracing), and "Found 'dict' in given
outputs" (the graph's named outputs are sorted by name; the exporter writes them into
infer_cfg.yml in that order). pycocotools' prints while the class names are read go too.
"""

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings

_ALWAYS = (re.compile(r"^Warning: Unable to use numba in PP-Tracking"),)
_OUR_THREADS = (
    re.compile(r"^WARNING: OMP_NUM_THREADS set to \d+, not 1\."),
    re.compile(r"^PLEASE USE OMP_NUM_THREADS WISELY\.$"),
)


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

    def __getattr__(self, name):  # fileno, isatty, encoding, ...
        return getattr(self.stream, name)


_WARNINGS = (
    r"No ccache found",
    r"When training, we now always track global mean and variance",
    r"Currently not a parallel execution environment",
)
PADDLE_OWN_FLAGS = ("FLAGS_enable_pir_in_executor",)
_BANNER_HEAD = "======================= Modified FLAGS detected ======================="
_FLAG_LINE = re.compile(r"^FLAGS\(name='(\w+)'")


def drop_known_warnings():
    """Filter the Python warnings of ``_WARNINGS`` for the rest of the process."""
    for message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def drop_paddle_flags_banner(text):
    """``text`` without Paddle's ``Modified FLAGS detected`` banner when it lists only
    ``PADDLE_OWN_FLAGS``; any other text (a banner with another flag too) is kept."""
    lines = text.split("\n")
    if _BANNER_HEAD not in lines:
        return text
    head = lines.index(_BANNER_HEAD)
    tail = next((i for i in range(head + 1, len(lines)) if set(lines[i]) == {"="}), None)
    if tail is None:
        return text
    flags = [_FLAG_LINE.match(line) for line in lines[head + 1 : tail]]
    if not flags or not all(f and f.group(1) in PADDLE_OWN_FLAGS for f in flags):
        return text
    return "\n".join(lines[:head] + lines[tail + 1 :])


@contextlib.contextmanager
def parallel_init_quiet():
    """Within the block, Paddle's own-flags banner is dropped from ``sys.stderr`` (module
    docstring); the rest is written when the block ends."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        sys.stderr.write(drop_paddle_flags_banner(captured.getvalue()))
        sys.stderr.flush()


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


_EXPORT_LOG = (re.compile(r"Paddle static graph\(PIR\) not support input out tensor"),)


@contextlib.contextmanager
def c_stderr_dropped(patterns):
    """Within the block, lines written to file descriptor 2 (C++ logs, which Python's
    ``sys.stderr`` does not see) that match one of ``patterns`` are dropped; the others are
    written to the real stderr when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not any(p.search(line) for p in patterns):
                    sys.stderr.write(line)
            sys.stderr.flush()


@contextlib.contextmanager
def export_notices_dropped():
    """The known notices of tracing and saving a model (module docstring), dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Tensor do not have 'place' interface", category=UserWarning
        )
        warnings.filterwarnings(
            "ignore", message=r"Found 'dict' in given outputs", category=UserWarning
        )
        with c_stderr_dropped(_EXPORT_LOG):
            yield
