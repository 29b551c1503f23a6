"""The service's predictor pool: ``pool_size`` predictors (clones sharing the weights), at most
``pool_size`` predictions running on worker threads and ``max_queue`` waiting, on anyio."""

import contextlib
import queue

import anyio
import anyio.to_thread

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_image_size, check_max_pixels
from ppdet_dac.deploy.postprocess import detection_records

from .protocol import INPUT_KEY, INPUT_PARAMS_ERROR, TIMEOUT, RequestError, decode_request


class DetectionService:
    """A fixed pool of predictors and the request -> answer logic.

    ``parse(body)`` checks a request (JSON, base64, the image header: size and aspect ratio, of
    the tiles when the predictor slices); ``await detect(image)`` admits it (at most pool_size
    running + max_queue waiting; beyond, a busy RequestError at once) and returns its detection
    records. A caller that stops waiting (its cancel scope: a timeout, a client gone) drops a
    request still queued; a prediction already running finishes on its thread and keeps its
    predictor (and its place in ``in_flight``) until then. The predictor's options (score and
    NMS thresholds, slicing) apply.
    """

    def __init__(self, predictor, pool_size=2, max_queue=8, max_pixels=DEFAULT_MAX_PIXELS):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.label_list = predictor.label_list
        self.pool_size, self.max_queue = int(pool_size), int(max_queue)
        self.max_pixels = check_max_pixels(max_pixels)
        self.check_size = predictor.check_size
        self._idle = queue.SimpleQueue()
        self._idle.put(predictor)
        for _ in range(pool_size - 1):
            self._idle.put(predictor.clone())
        # one token per predictor, held from admission to the end of the prediction's thread
        self._slots = anyio.CapacityLimiter(self.pool_size)
        self._threads = anyio.CapacityLimiter(self.pool_size)
        self._tasks = None  # the task group of running()

    @property
    def in_flight(self):
        """Requests admitted: running (their thread included) or waiting for a predictor."""
        return self._slots.borrowed_tokens + self._slots.statistics().tasks_waiting

    def parse(self, body):
        """Request body -> (image bytes, logid) after the header checks; RequestError."""
        image, logid = decode_request(body)
        what = f"the image in {INPUT_KEY!r}"
        try:
            height, width = check_image_size(image, self.max_pixels, what)
            self.check_size(height, width, what)
        except ValueError as err:  # not an image, over max_pixels, too thin for the model
            raise RequestError(INPUT_PARAMS_ERROR, str(err))
        return image, logid

    @contextlib.asynccontextmanager
    async def running(self):
        """The pool at work (around the app's lifespan): the predictions run in its tasks; at
        the end, predictions still running are left to finish on their threads."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    async def detect(self, image):
        """The detection records of one parsed image, or RequestError (busy)."""
        if self.in_flight >= self.pool_size + self.max_queue:  # no await since: admission
            raise RequestError(
                TIMEOUT,
                f"server busy: {self.in_flight} requests in progress "
                f"or queued (pool_size {self.pool_size} + max_queue "
                f"{self.max_queue}); retry later",
                503,
                retry_after=1,
            )
        token, done, outcome = object(), anyio.Event(), []
        await self._slots.acquire_on_behalf_of(token)  # cancelled here: dropped from the queue
        # from here the pool's task owns the slot: it gives it back when the thread ends, also
        # after this caller stopped waiting
        self._tasks.start_soon(self._run, image, token, outcome, done)
        await done.wait()
        if not outcome:  # the pool stopped first
            raise RequestError(TIMEOUT, "server shutting down; retry later", 503, retry_after=1)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    async def _run(self, image, token, outcome, done):
        try:
            outcome.append(
                await anyio.to_thread.run_sync(
                    self._predict, image, abandon_on_cancel=True, limiter=self._threads
                )
            )
        except Exception as err:  # the caller raises it
            outcome.append(err)
        finally:
            self._slots.release_on_behalf_of(token)
            done.set()

    def _predict(self, image):
        predictor = self._idle.get()
        try:
            try:
                image = predictor.load(image)
            except ValueError as err:  # pixel data that do not decode
                raise RequestError(INPUT_PARAMS_ERROR, f"value of {INPUT_KEY!r}: {err}")
            detections = predictor.detect(image)
        finally:
            self._idle.put(predictor)
        return detection_records(detections, self.label_list)
