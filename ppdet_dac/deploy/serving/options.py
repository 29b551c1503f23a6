"""The service's options in one checked model (picklable: sent to worker processes)."""

import dataclasses

from ppdet_dac.data.image_io import DEFAULT_MAX_PIXELS, check_max_pixels
from ppdet_dac.deploy.slicing import SliceConfig

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 18093
MAX_DEFAULT_GRACE = 20.0  # s; orchestrators send SIGKILL 30 s after SIGTERM
# option -> smallest value allowed (integers), and the options that must be > 0 (seconds, MB)
AT_LEAST = {"workers": 1, "pool_size": 1, "max_queue": 0, "max_connections": 1}
POSITIVE = ("max_body_mb", "request_timeout", "body_timeout", "timeout_keep_alive")


@dataclasses.dataclass
class ServingOptions:
    """Everything the service and its workers need; a value out of range is a ValueError
    naming its command-line flag. The predictor options (device ... slicing) are checked by
    the Predictor, max_pixels here (against OpenCV's own limit in this process)."""

    model_dir: str
    device: str = "CPU"
    pool_size: int = 2
    cpu_threads: int = 1
    enable_mkldnn: bool = True
    max_body_mb: float = 20.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    score_threshold: float = 0.0
    request_timeout: float = 60.0
    max_queue: int = 8
    nms_threshold: float = None
    slicing: SliceConfig = None
    body_timeout: float = 10.0
    # the connection layer (uvicorn)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    max_connections: int = 256
    timeout_keep_alive: float = 5.0
    timeout_graceful_shutdown: float = None  # None: request_timeout + 5, at most 20 s
    access_log: bool = False

    def __post_init__(self):
        for name, minimum in AT_LEAST.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"--{name} must be >= {minimum}, got {getattr(self, name)}")
        for name in POSITIVE:
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        check_max_pixels(self.max_pixels, "--max_pixels")

    @property
    def max_body_bytes(self):
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def grace(self):
        """Seconds a shutdown waits for the requests in flight."""
        if self.timeout_graceful_shutdown is not None:
            return self.timeout_graceful_shutdown
        return min(self.request_timeout + 5, MAX_DEFAULT_GRACE)

    @property
    def body_deadline(self):
        """(seconds, flag): the upload's time limit, the shorter of --body_timeout and
        --request_timeout."""
        if self.body_timeout <= self.request_timeout:
            return self.body_timeout, "--body_timeout"
        return self.request_timeout, "--request_timeout"
