"""Runs over several processes (one machine or several): objects shared between the ranks, and
one rank's failure stopping every rank.

``RankFailureGuard`` is needed because a collective waits for every rank: when one rank raises
(a data error, a failed write, the NaN guard on that rank alone) while the others wait in an
all-reduce, NCCL keeps them waiting until its timeout (``PADDLE_PG_TIMEOUT``, 30 minutes), and
``paddle.distributed.launch`` only stops the processes of its own machine. The guard tells every
rank through the run's rendezvous store (the TCPStore at ``PADDLE_MASTER`` that
``init_parallel_env`` created, served by rank 0's process), so the others stop within seconds
with the failing rank's error in their own log.
"""

import contextlib
import os
import socket
import sys
import threading
import time

import paddle.distributed as dist
from ppdet.engine import init_parallel_env as ppdet_init_parallel_env
from ppdet.utils.logger import setup_logger

from ppdet_dac._notices import parallel_init_quiet

logger = setup_logger(__name__)

__all__ = [
    "RankFailureGuard",
    "all_gather_objects",
    "broadcast_from_rank0",
    "init_parallel_env",
    "no_interrupt",
    "world",
]

_PREFIX = "ppdet_dac/"
_ACTIVE = None  # the RankFailureGuard of this process while it is entered


def init_parallel_env():
    """ppdet's ``init_parallel_env`` (seeds of a launched rank, Paddle's parallel set-up) without
    Paddle's banner of its own flags (``ppdet_dac._notices.parallel_init_quiet``)."""
    with parallel_init_quiet():
        ppdet_init_parallel_env()


def world():
    """(number of ranks, this rank)."""
    return dist.get_world_size(), dist.get_rank()


def all_gather_objects(obj):
    """[the ``obj`` of rank 0, of rank 1, ...] on every rank (picklable objects)."""
    nranks, _ = world()
    if nranks < 2:
        return [obj]
    gathered = []
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank."""
    nranks, _ = world()
    if nranks < 2:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def no_interrupt():
    """A context in which the failure guard does not end this process (a checkpoint write):
    a failure elsewhere ends it right after the block."""
    return _ACTIVE.lock if _ACTIVE is not None else contextlib.nullcontext()


def _say(rank, message):
    """An error line on every rank (ppdet's logger prints on rank 0 only)."""
    if rank == 0:
        logger.error(message)
    else:
        print(f"rank {rank} ERROR: {message}", file=sys.stderr, flush=True)


def _store_endpoint():
    """host, port of the rendezvous store, found as ``paddle.distributed.init_parallel_env``
    finds it."""
    addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    endpoint = f"{addr}:{port}" if addr and port else os.environ.get("PADDLE_MASTER")
    if not endpoint:
        endpoint = os.environ.get("PADDLE_TRAINER_ENDPOINTS", "").split(",")[0]
    if ":" not in endpoint:
        raise RuntimeError(
            "a run over several processes needs the rendezvous endpoint in "
            "PADDLE_MASTER (or MASTER_ADDR / MASTER_PORT); start it with "
            "python -m paddle.distributed.launch"
        )
    host, port = endpoint.rsplit(":", 1)
    return host, int(port)


class RankFailureGuard:
    """``with RankFailureGuard(): ...`` around a rank's work (after ``init_parallel_env``).

    * The body raises on this rank: the error ("rank r on host: Type: message") goes to the
      store, the guard waits (at most ``ack_s``) until the other ranks have seen it, and the
      exception propagates as usual.
    * Another rank failed: a daemon thread that polls the store every ``poll_s`` logs that
      rank's error and ends this process with exit code 1, after ``grace_s`` in which the main
      thread may fail by itself (the NaN guard stops all ranks together) and after a
      checkpoint write in progress (``no_interrupt``). A store that no longer answers (rank
      0's process has ended) stops the rank the same way.
    * Normal end: each rank stops its thread, then rank 0 keeps the store up until every rank
      has done so (at most ``end_s``).

    A rank whose main thread waits in a collective can be stopped this way because Paddle
    releases the GIL while it waits (checked with gloo). One process: does nothing.
    """

    def __init__(self, poll_s=1.0, grace_s=3.0, ack_s=15.0, end_s=300.0):
        self.poll_s, self.grace_s, self.ack_s, self.end_s = poll_s, grace_s, ack_s, end_s
        self.nranks, self.rank = world()
        self.lock = threading.Lock()
        self._store = None
        self._failing = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # -- entering / leaving ------------------------------------------------------------------
    def __enter__(self):
        global _ACTIVE
        if self.nranks < 2:
            return self
        from paddle.base import core

        host, port = _store_endpoint()
        self._store = core.TCPStore(host, port, False, self.nranks, 60)
        self._thread = threading.Thread(target=self._watch, name="rank-failure-guard", daemon=True)
        self._thread.start()
        _ACTIVE = self
        return self

    def __exit__(self, exc_type, exc, tb):
        global _ACTIVE
        if self._store is None:
            return False
        failed = exc_type is not None and not (exc_type is SystemExit and not exc.code)
        if failed:
            self._failing.set()
        self._stop.set()
        self._thread.join()  # before reporting: this rank's own thread never acknowledges it
        _ACTIVE = None
        if failed:
            self._report(exc_type, exc)
        else:
            self._finish()
        return False

    # -- the failing rank --------------------------------------------------------------------
    def _report(self, exc_type, exc):
        text = f"{exc_type.__name__}: {exc}".strip()
        if len(text) > 4000:
            text = text[:4000] + " ..."
        message = f"rank {self.rank} on {socket.gethostname()}: {text}"
        try:
            order = self._store.add(_PREFIX + "failures", 1)
            self._store.set(f"{_PREFIX}failure/{order}", message.encode("utf-8"))
            if order > 1:  # another rank failed first: that is the cause
                first = bytes(self._store.get(f"{_PREFIX}failure/1")).decode("utf-8")
                _say(self.rank, f"rank {self.rank} failed after another rank: {first}")
                return
            deadline = time.time() + self.ack_s
            while time.time() < deadline:  # every rank has seen it or failed by itself
                if (
                    self._store.add(_PREFIX + "acks", 0) + self._store.add(_PREFIX + "failures", 0)
                    >= self.nranks
                ):
                    break
                time.sleep(0.2)
        except (RuntimeError, ValueError, OSError) as err:  # the store is gone (rank 0 ended)
            _say(
                self.rank,
                f"rank {self.rank} could not tell the other ranks that it failed "
                f"(the rendezvous store does not answer: {err})",
            )

    # -- the other ranks ---------------------------------------------------------------------
    def _watch(self):
        acked = False
        while not self._stop.wait(self.poll_s):
            try:
                failures = self._store.add(_PREFIX + "failures", 0)
                if failures and not acked:
                    message = bytes(self._store.get(f"{_PREFIX}failure/1")).decode("utf-8")
                    self._store.add(_PREFIX + "acks", 1)
                    acked = True
            except (RuntimeError, ValueError, OSError) as err:
                if self._stop.is_set() or self._failing.is_set():
                    return
                self._exit(
                    f"the rendezvous store of the run no longer answers ({err}): rank "
                    f"0's process has ended"
                )
                return
            if acked:
                if self._failing.wait(self.grace_s):
                    return  # this rank fails by itself; its exception propagates
                self._exit(f"{message}. Stopping rank {self.rank} as well")
                return

    def _exit(self, reason):
        _say(self.rank, f"a rank of this run failed: {reason}")
        with self.lock:  # let a checkpoint write in progress finish
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(1)

    def _finish(self):
        """Rank 0 serves the store: it waits until every rank has stopped polling it."""
        try:
            self._store.add(_PREFIX + "done", 1)
            if self.rank != 0:
                return
            deadline = time.time() + self.end_s
            while time.time() < deadline:
                if self._store.add(_PREFIX + "failures", 0):
                    message = bytes(self._store.get(f"{_PREFIX}failure/1")).decode("utf-8")
                    self._exit(f"{message} (after rank 0 had finished)")
                if self._store.add(_PREFIX + "done", 0) >= self.nranks:
                    return
                time.sleep(0.1)
            logger.warning(
                f"rank 0 finished; not every rank reported its end within {self.end_s:.0f} s"
            )
        except (RuntimeError, ValueError, OSError) as err:
            logger.warning(
                f"rank {self.rank}: the rendezvous store did not answer at the end "
                f"of the run ({err})"
            )
