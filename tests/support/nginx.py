"""A real nginx on a loopback port, run in the foreground from a test's directory."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def running_nginx(conf: str, workdir: Path, probe: str) -> Iterator[subprocess.Popen[bytes]]:
    """nginx with `conf` (a whole nginx.conf), ready once `probe` (a URL) answers."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    (workdir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [NGINX, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-e", "stderr",
         "-g", f"daemon off; pid {workdir / 'nginx.pid'};"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(probe, timeout=1)
            break
        except httpx.TransportError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
