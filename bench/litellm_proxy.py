"""The incumbent: the LiteLLM proxy from PyPI, in its own virtual environment.

Named litellm_proxy.py rather than litellm.py so that it never shadows the real package.
`ensure()` creates bench/.venv-litellm with the pinned release when it is absent;
`prepare()` writes a config that routes "auto" (and "auto-stream") to the nginx mock as
an OpenAI-compatible model and returns the command and environment to start it with.
If the install fails (no PyPI), the caller reports LiteLLM as unavailable.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

__all__ = ["HEALTH_PATH", "VENV", "VERSION", "ensure", "prepare", "server_stack"]

VERSION = "1.108.7"
BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-litellm"
HEALTH_PATH = "/health/liveliness"

_CONFIG = """\
model_list:
  - model_name: auto
    litellm_params:
      model: openai/bench
      api_base: {upstream}/v1
      api_key: sk-bench-upstream
  - model_name: auto-stream
    litellm_params:
      model: openai/bench
      api_base: {upstream}/stream/v1
      api_key: sk-bench-upstream
litellm_settings:
  drop_params: true
  set_verbose: false
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
"""


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def ensure(timeout: float = 900.0, log: Path | None = None) -> tuple[Path | None, str | None]:
    """(the `litellm` executable, None) or (None, why it is unavailable)."""
    python = VENV / "bin" / "python"
    exe = VENV / "bin" / "litellm"
    if _installed_version(python) == VERSION and exe.exists():
        return exe, None
    log = log or VENV.with_name(".venv-litellm-install.log")
    print(f"installing litellm[proxy]=={VERSION} into {VENV} (log: {log})", file=sys.stderr)
    try:
        with open(log, "w") as out:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True,
                               stdout=out, stderr=out, timeout=120)  # fmt: skip
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", f"litellm[proxy]=={VERSION}"],
                check=True, stdout=out, stderr=out, timeout=timeout,
            )  # fmt: skip
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return None, f"install of litellm[proxy]=={VERSION} failed: {exc} (see {log})"
    if _installed_version(python) != VERSION or not exe.exists():
        return None, f"litellm {VERSION} not importable after install (see {log})"
    return exe, None


def server_stack() -> str:
    """Which uvicorn loop and HTTP parser the venv gives LiteLLM (it uses uvicorn's "auto")."""
    probe = (
        "import importlib.util as u; "
        "print('uvloop' if u.find_spec('uvloop') else 'asyncio', "
        "'httptools' if u.find_spec('httptools') else 'h11')"
    )
    try:
        out = subprocess.run([str(VENV / "bin" / "python"), "-c", probe], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return "uvicorn " + "+".join(out.stdout.split()) if out.returncode == 0 else "unknown"


def prepare(exe: Path, workdir: Path, upstream: str, port: int) -> tuple[list[str], dict, str]:
    """(command, environment, master key) to start the proxy with one worker."""
    config = workdir / "litellm.yaml"
    config.write_text(_CONFIG.format(upstream=upstream.rstrip("/")))
    key = "sk-" + secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_MASTER_KEY=key,
        LITELLM_LOG="ERROR",
        LITELLM_TELEMETRY="False",
        # Only loopback traffic: anything that tries HTTPS to the outside hits a dead
        # loopback port instead (the mock upstream is plain HTTP on 127.0.0.1).
        HTTPS_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONPATH", None)
    cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1"]  # fmt: skip
    return cmd, env, key
