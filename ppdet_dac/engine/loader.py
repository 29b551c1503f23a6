"""A data error stops the tool that reads the data: the reader's exception reaches the main
thread, with its own message, instead of a hang.

Paddle 3.3's DataLoader reads batches in a thread of the main process (``worker_num: 0``) or
collects the workers' batches in one (``worker_num > 0``), and hands them to the main thread
through a blocking queue. With ``worker_num: 0`` an exception raised while a batch is read (an
undecodable image, a sample without ``gt_bbox``) ends that thread without closing the queue:
the traceback is printed and the main thread waits for the next batch forever. With workers,
the thread closes the queue and raises there; the main thread gets a ``SystemError`` ("Blocking
queue is killed") that does not say what failed.

``ReportingDataLoader`` keeps the thread's exception and raises it in the main thread at the
next batch (with the reader's traceback); ``use_reporting_loader`` makes ppdet's readers (Train,
Eval, Test) build it. ``ppdet_dac.engine`` calls it on import, so every tool that imports
ppdet_dac gets it.

Paddle has no public hook for this: the iterators subclass Paddle's private
``_DataLoaderIter*`` classes, listed with the Paddle version they were written against in
``ppdet_dac/private_apis.py`` (tests/test_private_apis.py fails when that version changes).
"""

import threading

from paddle.io import DataLoader
from paddle.io.dataloader.dataloader_iter import (
    _DataLoaderIterMultiProcess,
    _DataLoaderIterSingleProcess,
)

__all__ = ["ReportingDataLoader", "use_reporting_loader"]

# How long the main thread waits for the loader thread to hand over its exception once the
# queue is closed (with workers the queue is closed just before the thread raises).
_HANDOVER_S = 10.0


class _ReportingIter:
    """Mixin for Paddle's DataLoader iterators: the loader thread's exception is kept and
    raised by ``__next__`` in the caller's thread."""

    _loader_error = None
    _loader_thread = None

    def _thread_loop(self, *args):
        self._loader_thread = threading.current_thread()
        try:
            super()._thread_loop(*args)
        except Exception as err:  # raised again by __next__, in the caller's thread
            self._loader_error = err
            self._exit_thread_unexpectedly()

    def _handed_over(self):
        if self._loader_error is None and self._loader_thread is not None:
            self._loader_thread.join(_HANDOVER_S)
        return self._loader_error

    def __next__(self):
        try:
            return super().__next__()
        except StopIteration:
            raise
        except Exception:
            error = self._handed_over()
            if error is None:
                raise
        self._try_shutdown_all()
        raise error  # outside the except block: the reader's error alone, its traceback kept


class _SingleProcessIter(_ReportingIter, _DataLoaderIterSingleProcess):
    pass


class _MultiProcessIter(_ReportingIter, _DataLoaderIterMultiProcess):
    pass


class ReportingDataLoader(DataLoader):
    """paddle.io.DataLoader whose iterators raise the reader's exception in the caller's thread
    (see the module docstring); otherwise the same."""

    def __iter__(self):
        if self.num_workers == 0:
            return _SingleProcessIter(self)
        if self._persistent_workers:
            if self._iterator is None:
                self._iterator = _MultiProcessIter(self)
            else:
                self._iterator._reset()
            return self._iterator
        return _MultiProcessIter(self)


def use_reporting_loader():
    """Make ppdet's readers (``ppdet.data.reader.BaseDataLoader``) build ReportingDataLoader."""
    from ppdet.data import reader

    reader.DataLoader = ReportingDataLoader
