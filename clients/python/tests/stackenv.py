"""What the integration tests need around the client: the stack's URLs from the
environment, the golden samples exported with the models, and a bare nats-server (no
dispatcher, so no streams unless a test makes them) for the publish-refusal cases."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

import numpy as np

from wiredoc import REPO_ROOT

NATS_URL = os.environ.get("JETINFER_TEST_NATS_URL", "")
REDIS_URL = os.environ.get("JETINFER_TEST_REDIS_URL", "")
GOLDEN = Path(os.environ.get("JETINFER_TEST_GOLDEN", REPO_ROOT / "models" / "out" / "golden.json"))
SKIP_REASON = "set JETINFER_TEST_NATS_URL and JETINFER_TEST_REDIS_URL to run against a real stack"
# The tolerances of the Rust tests for f32 models on the CPU (tests/src/lib.rs).
ATOL, RTOL = 1e-4, 1e-3


def golden_samples(model: str, count: int) -> List[Tuple[List[np.ndarray], List[np.ndarray]]]:
    """``count`` (inputs, outputs) pairs of one sample each, cycling through the model's sets."""
    index = json.loads(GOLDEN.read_text())
    entry = next(m for m in index["models"] if m["name"] == model)
    sets = [([np.load(GOLDEN.parent / p) for p in s["inputs"]], [np.load(GOLDEN.parent / p) for p in s["outputs"]])
            for s in entry["sets"]]
    samples = [([a[k] for a in ins], [a[k] for a in outs]) for ins, outs in sets for k in range(len(ins[0]))]
    return [samples[i % len(samples)] for i in range(count)]


def mismatch(result, expected: List[np.ndarray]) -> str:
    """Why a result differs from the golden outputs ("" when it matches)."""
    if not result.ok:
        return f"status {result.status} ({result.error})"
    if len(result.outputs) != len(expected):
        return f"{len(result.outputs)} outputs, expected {len(expected)}"
    for j, (got, want) in enumerate(zip(result.outputs, expected)):
        if got.shape != want.shape or not np.allclose(got, want, rtol=RTOL, atol=ATOL):
            return f"output {j}: got {got.shape} {got.ravel()[:4]}, expected {want.shape} {want.ravel()[:4]}"
    return ""


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        raise RuntimeError("nats-server not found on PATH nor next to the Python interpreter (scripts/setup.sh)")
    return found


class BareNats:
    """A nats-server with JetStream on a free port, for as long as the ``with`` block;
    ``config``: the text of a configuration file to start it with (users, permissions)."""

    def __init__(self, config: str = ""):
        self.config = config

    def __enter__(self) -> "BareNats":
        self.dir = tempfile.mkdtemp(prefix="jetinfer-py-nats-")
        extra = []
        if self.config:
            path = Path(self.dir) / "nats.conf"
            path.write_text(self.config)
            extra = ["-c", str(path)]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        self.proc = subprocess.Popen([nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port),
                                      "-sd", self.dir, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"nats-server on port {port} did not start")
                time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
