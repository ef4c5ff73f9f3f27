"""The `gatewise` command, run as a real subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "gateway.yaml"
UNSET = (
    "GATEWISE_CONFIG",
    "GATEWISE_API_KEY",
    "GATEWISE_ADMIN_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OLLAMA_BASE_URL",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_shipped_config() -> None:
    result = run("check", "--config", str(SHIPPED))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"configuration: {SHIPPED}" in out
    for section in ("providers:", "models:", "routes:"):
        assert section in out
    assert "DISABLED (OPENAI_API_KEY not set)" in out
    assert "DISABLED (ANTHROPIC_API_KEY not set)" in out
    assert "DISABLED (OLLAMA_BASE_URL not set)" in out
    mock_line = next(line for line in out.splitlines() if line.strip().startswith("mock "))
    assert "enabled" in mock_line and "built-in" in mock_line
    assert "gpt-4o-mini" in out and "(provider disabled)" in out
    assert "mock-fast" in out
    assert "auto" in out and "cheap" in out
    assert "(the gateway is OPEN)" in out
    assert (
        "inbound limits per worker: header timeout 10 s, idle timeout 75 s, max connections "
        "half the open-file limit, less 64, max head 65,536 bytes / 100 headers, request "
        "bodies 10,485,760 bytes each and 1,073,741,824 bytes together with their answers, parsed"
    ) in out
    assert result.stderr == ""


def test_check_with_keys_set() -> None:
    result = run("check", "--config", str(SHIPPED), OPENAI_API_KEY="sk-x", GATEWISE_API_KEY="k")
    assert result.returncode == 0, result.stderr
    openai_line = next(line for line in result.stdout.splitlines() if "api.openai.com" in line)
    assert "enabled" in openai_line
    assert "client api keys: 1" in result.stdout
    assert "OPEN" not in result.stdout


def test_invalid_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    raw = {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "m", "provider": "mock", "priors": {"accuracy": 42}}],
    }
    path.write_text(yaml.safe_dump(raw))
    result = run("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"gatewise: {path}: invalid configuration")
    assert "models[0].priors.accuracy" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("models: [oops\n")
    result = run("check", "--config", str(path))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr

    missing = tmp_path / "absent.yaml"
    result = run("check", "--config", str(missing))
    assert result.returncode == 2
    assert f"{missing}: cannot read the configuration" in result.stderr
    assert "Traceback" not in result.stderr


def test_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "gatewise" in result.stdout
    assert "serve" in result.stdout and "check" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_gatewise_config_env_is_honoured(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(yaml.safe_dump({"providers": [{"name": "envmock", "type": "mock"}]}))
    result = run("check", cwd=tmp_path, GATEWISE_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert f"configuration: {path}" in result.stdout
    assert "envmock" in result.stdout


def test_explicit_config_beats_env(tmp_path: Path) -> None:
    env_path = tmp_path / "env.yaml"
    env_path.write_text("colour: blue\n")  # invalid: must not be read
    result = run("check", "--config", str(SHIPPED), cwd=tmp_path, GATEWISE_CONFIG=str(env_path))
    assert result.returncode == 0, result.stderr
    assert f"configuration: {SHIPPED}" in result.stdout


def test_default_is_gateway_yaml_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(
        yaml.safe_dump({"providers": [{"name": "cwdmock", "type": "mock"}]})
    )
    result = run("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration: gateway.yaml" in result.stdout
    assert "cwdmock" in result.stdout


def test_console_script() -> None:
    exe = shutil.which("gatewise")
    if exe is None:
        pytest.skip("the gatewise console script is not installed on PATH")
    result = subprocess.run(
        [exe, "check", "--config", str(SHIPPED)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "DISABLED (OPENAI_API_KEY not set)" in result.stdout


def test_serve_lifts_the_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    """Every client and upstream connection is a file: a soft limit of 1,024 (a common
    default) would refuse clients long before the pools are full."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to lift")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = (
        "import resource; from gateway.server.cli import raise_open_file_limit; "
        "print(*raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_soft_limit,
    )
    soft_now, hard_seen, soft_in_force = map(int, out.stdout.split())
    assert soft_now == soft_in_force > 256
    assert hard_seen == hard


def _config_with_storage(tmp_path: Path, url: str, **provider: str) -> Path:
    config = {
        "providers": [{"name": "up", "type": "openai", "api_key": "k",
                       "base_url": "http://127.0.0.1:9/v1", **provider}],
        "models": [{"name": "m", "provider": "up"}],
        "storage": {"url": url},
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_check_and_serve_refuse_a_storage_path_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir.db").mkdir()
    for url, why in (
        (f"sqlite:///{tmp_path}/a-file/gatewise.db", "is not a directory"),
        (f"sqlite:///{tmp_path}/a-dir.db", "is a directory, not a database file"),
        ("sqlite:////proc/gatewise/gatewise.db", "cannot write in '/proc'"),
    ):
        config = _config_with_storage(tmp_path, url)
        for command in ("check", "serve"):
            args = [command, "--config", str(config)] + (
                ["--port", "9"] if command == "serve" else []
            )
            result = run(*args)
            assert result.returncode == 2, (url, command, result.stderr)
            assert why in result.stderr, result.stderr
            assert "Traceback" not in result.stderr


def test_check_accepts_a_storage_path_still_to_be_made_and_makes_nothing(tmp_path: Path) -> None:
    config = _config_with_storage(tmp_path, f"sqlite:///{tmp_path}/new/deeper/gatewise.db")
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml"]


def test_check_never_prints_what_a_base_url_query_may_hide(tmp_path: Path) -> None:
    url = "https://llm.internal/v1?key=AIza-secret-123&api-version=2024-10-01"
    config = _config_with_storage(tmp_path, "sqlite://:memory:", base_url=url)
    result = run("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "https://llm.internal/v1?key=...&api-version=..." in result.stdout
    assert "AIza-secret-123" not in result.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_prints_the_address_it_listens_on(tmp_path: Path, workers: int) -> None:
    from tests.support.gateway import GatewayProcess

    config = {"providers": [{"name": "mock", "type": "mock"}], "models": [], "routes": []}
    args = ["--workers", str(workers)] if workers > 1 else []
    with GatewayProcess(config, tmp_path, args=args) as gw:
        served = "2 workers" if workers > 1 else "serving"
        assert f"Gatewise: {served} on {gw.url} (OpenAI API at {gw.url}/v1" in gw.logs()


def test_serve_on_a_taken_port_exits_3_without_announcing(tmp_path: Path) -> None:
    import socket

    from tests.support.gateway import GatewayProcess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = {"providers": [{"name": "mock", "type": "mock"}], "models": [], "routes": []}
        gw = GatewayProcess(config, tmp_path)
        gw.port = taken.getsockname()[1]
        gw.url = f"http://127.0.0.1:{gw.port}"
        with pytest.raises(RuntimeError, match="exited early"):
            gw.start(timeout=10)
        assert gw.stop() == 3
        assert "Gatewise: serving" not in gw.logs()
        assert f"cannot listen on 127.0.0.1:{gw.port}" in gw.logs()
        assert "Traceback" not in gw.logs()


def test_check_names_a_bad_experiment_by_its_path_and_lists_good_ones(tmp_path: Path) -> None:
    raw = {
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "a", "provider": "mock"}, {"name": "b", "provider": "mock"}],
        "routes": [{"name": "auto", "models": ["a", "b"]}],
        "experiments": [
            {"name": "ab", "route": "auto", "arms": [
                {"name": "control", "model": "a", "share": 0.7},
                {"name": "challenger", "model": "b", "share": 0.3}]},
        ],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "ab           on auto, overall, fixed: control=a 70%, challenger=b 30%" in result.stdout
    raw["experiments"][0]["arms"][1]["model"] = "c"
    path.write_text(yaml.safe_dump(raw))
    result = run("check", "--config", str(path))
    assert result.returncode == 2
    assert "experiments[0].arms[1].model: unknown model 'c'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_says_where_metrics_traces_and_logs_go(tmp_path: Path) -> None:
    config = yaml.safe_load(SHIPPED.read_text())
    config["server"].update(admin_token="a-token", metrics_token="m-token")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    logging_config = tmp_path / "logging.yaml"
    logging_config.write_text("version: 1\nroot: {level: INFO}\n")
    result = run("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "admin api: server.admin_token" in result.stdout
    assert "metrics: GET /metrics, server.metrics_token (or the admin token)" in result.stdout
    assert "traces: off (set OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT)" in result.stdout
    assert "logs: JSON lines to stderr" in result.stdout
    assert "m-token" not in result.stdout and "a-token" not in result.stdout

    result = run(
        "check",
        "--config",
        str(path),
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
        GATEWISE_LOG_CONFIG=str(logging_config),
    )
    assert result.returncode == 0, result.stderr
    assert "traces: OTLP to http://127.0.0.1:4318" in result.stdout
    assert f"logs: as GATEWISE_LOG_CONFIG={logging_config} says" in result.stdout


def test_check_and_serve_refuse_a_log_config_logging_cannot_use(tmp_path: Path) -> None:
    broken = tmp_path / "logging.yaml"
    broken.write_text("handlers: [not, a, mapping\n")
    for command in ("check", "serve"):
        result = run(command, "--config", str(SHIPPED), GATEWISE_LOG_CONFIG=str(broken))
        assert result.returncode == 2, result.stderr
        assert f"GATEWISE_LOG_CONFIG={broken}: cannot be read as YAML or JSON" in result.stderr
    missing_version = tmp_path / "plain.yaml"
    missing_version.write_text("handlers: {}\n")
    result = run("check", "--config", str(SHIPPED), GATEWISE_LOG_CONFIG=str(missing_version))
    assert result.returncode == 2
    assert "expected a logging.config.dictConfig mapping with 'version'" in result.stderr
