"""The service as a package: its options checked in one place (ServingOptions, also what the
CLI reports), and nothing reaches it through sys.path edits or file-path imports."""

import os
import re
import subprocess
import sys

import pytest

from _deploy_helpers import REPO
from ppdet_dac.deploy.serving import ServingOptions

# (option, bad value) -> the one message, naming the command-line flag
BAD_OPTIONS = {
    ("pool_size", 0): "--pool_size must be >= 1, got 0",
    ("workers", 0): "--workers must be >= 1, got 0",
    ("max_queue", -1): "--max_queue must be >= 0, got -1",
    ("max_connections", 0): "--max_connections must be >= 1, got 0",
    ("max_body_mb", 0.0): "--max_body_mb must be > 0, got 0.0",
    ("request_timeout", -1.0): "--request_timeout must be > 0, got -1.0",
    ("body_timeout", float("nan")): "--body_timeout must be > 0, got nan",
    ("timeout_keep_alive", 0.0): "--timeout_keep_alive must be > 0, got 0.0",
    ("max_pixels", 0): "--max_pixels",
}


@pytest.mark.parametrize("option, value", sorted(BAD_OPTIONS))
def test_options_out_of_range_are_one_error_naming_the_flag(option, value):
    with pytest.raises(ValueError) as err:
        ServingOptions("m", **{option: value})
    assert BAD_OPTIONS[option, value] in str(err.value)


def test_options_defaults_and_derived_values():
    options = ServingOptions("m", max_body_mb=0.5, request_timeout=3.0, body_timeout=10.0)
    assert options.max_body_bytes == 524288
    assert options.body_deadline == (3.0, "--request_timeout")  # the shorter of the two
    assert options.grace == 8.0  # request_timeout + 5
    assert ServingOptions("m").grace == 20.0  # at most 20 s by default
    assert ServingOptions("m", timeout_graceful_shutdown=2.5).grace == 2.5


def test_cli_reports_a_bad_option_in_one_line():
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "deploy", "serving", "server.py"),
            "--model_dir",
            "m",
            "--pool_size",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (
        proc.stderr.strip().splitlines()[-1].endswith("error: --pool_size must be >= 1, got 0")
    ), proc.stderr[-2000:]


# a statement that edits sys.path or loads a file by path
PATH_IMPORT = re.compile(r"(sys\.path\.(insert|append)|spec_from_file_location|run_path)\(")
# ... and names the service's modules or folder (client.py, a standalone script, may be loaded)
SERVICE_NAMES = re.compile(r"server\.py|_decode_limit|connection_limits|\"serving\"\)")
SERVICE_FILES = ("deploy/serving/server.py", "ppdet_dac/deploy/serving/")


def _path_imports(rel, text):
    """The statements of ``text`` (a file at ``rel``) that reach the service by path."""
    service = rel.startswith(SERVICE_FILES)
    return [
        f"{rel}: {statement.strip()[:80]}"
        for statement in re.split(r"\n(?=\S)|\n\s*\n", text)
        if PATH_IMPORT.search(statement) and (service or SERVICE_NAMES.search(statement))
    ]


def test_nothing_imports_the_service_by_path():
    found = []
    for top in ("ppdet_dac", "deploy", "tools", "tests", "benchmarks"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                path = os.path.join(folder, name)
                if name.endswith(".py") and path != os.path.abspath(__file__):
                    with open(path) as f:
                        found += _path_imports(os.path.relpath(path, REPO), f.read())
    assert found == []
