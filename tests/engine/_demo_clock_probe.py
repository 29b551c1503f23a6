"""tools/demo.py's main() with an injected clock, for test_demo_tool.py.

    python tests/engine/_demo_clock_probe.py SETUP_S LAP_S,LAP_S,... [demo flags]

The demo's module is imported first (its ``STARTED`` is this process's time, taken before any
Paddle import). main() then runs with ``--started_at STARTED - SETUP_S`` and with the demo's
``time`` replaced by a clock whose n-th reading is ``STARTED + LAP_S[n]``: its Stopwatch laps
read that clock only, so the printed times are known exactly. The last stdout line is JSON:
``started`` (the demo's STARTED), ``paddle_imported_at`` (the real time of the first
``import paddle``), ``readings`` (how many times the demo read the clock), ``parts`` (what
main returned).
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tools"))
FIRST_IMPORT = {}


class _WatchPaddleImport:
    """A meta-path finder that only notes the time of the first ``import paddle``."""

    def find_spec(self, name, path=None, target=None):
        if name == "paddle" and "paddle" not in FIRST_IMPORT:
            FIRST_IMPORT["paddle"] = time.time()
        return None


sys.meta_path.insert(0, _WatchPaddleImport())
assert "paddle" not in sys.modules, "the probe must import the demo before Paddle"
import demo  # noqa: E402  (tools/demo.py)


class _Clock:
    """``time`` for the demo module: ``time()`` returns ``start + laps[n]`` at its n-th call."""

    def __init__(self, start, laps):
        self.start, self.laps, self.readings = start, laps, 0

    def time(self):
        if self.readings >= len(self.laps):
            raise AssertionError(f"the demo read the clock more than {len(self.laps)} times")
        self.readings += 1
        return self.start + self.laps[self.readings - 1]


if __name__ == "__main__":
    setup_s, laps = float(sys.argv[1]), [float(v) for v in sys.argv[2].split(",")]
    clock = _Clock(demo.STARTED, laps)
    demo.time = clock
    result = demo.main(["--started_at", repr(demo.STARTED - setup_s), *sys.argv[3:]])
    print(
        json.dumps(
            {
                "started": demo.STARTED,
                "paddle_imported_at": FIRST_IMPORT.get("paddle"),
                "readings": clock.readings,
                "parts": result["parts"],
            }
        )
    )
