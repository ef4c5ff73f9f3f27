"""The `gatewise` command: serve, check (and demo once it lands)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from collections.abc import Mapping

from gateway.core.config import Config, ConfigError, config_path, load_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gatewise", description="An OpenAI-compatible LLM gateway."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", help="path to gateway.yaml (default: $GATEWISE_CONFIG or ./gateway.yaml)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--probe-port",
        type=int,
        default=None,
        help="also answer /healthz, /readyz and /metrics (only) on this port, on listeners "
        "of their own: probes never queue behind clients, and are answered past "
        "server.max_connections",
    )
    serve.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")

    check = commands.add_parser(
        "check", help="validate the configuration and print what it resolves to"
    )
    check.add_argument("--config")

    demo = commands.add_parser("demo", help="run on simulated models with synthetic traffic")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument("--rate", type=float, default=12.0, help="synthetic requests per second")
    demo.add_argument("--db", default=None, help="SQLite file (default: a temporary one)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from gateway.server.demo import run_demo

        return run_demo(args.host, args.port, args.duration, args.rate, args.db)
    path = config_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"gatewise: {exc}", file=sys.stderr)
        return 2
    problem = _storage_problem(config) or _log_config_problem(os.environ)
    if args.command == "check":
        print(describe(config))
        if problem:
            print(f"gatewise: {problem}", file=sys.stderr)
            return 2
        return 0
    if problem:  # refused here with a clear message, not as a failed start-up (exit 3)
        print(f"gatewise: {problem}", file=sys.stderr)
        return 2
    return _serve(config, path, args)


def _shown(url: str | None) -> str | None:
    """A base_url as printed: a query string may hold a key (?key=...), so its values
    are left out."""
    if not url or "?" not in url:
        return url
    base, _, query = url.partition("?")
    names = [part.partition("=")[0] for part in query.split("&") if part]
    return base + "?" + "&".join(f"{name}=..." for name in names)


def _storage_problem(config: Config) -> str | None:
    from gateway.storage import StoreError, create_store

    try:
        return create_store(config.storage.url).preflight()
    except StoreError as exc:
        return str(exc)


def _log_config_problem(env: Mapping[str, str]) -> str | None:
    """A GATEWISE_LOG_CONFIG that could not configure logging, said before start-up."""
    from gateway.core.logs import LOG_CONFIG_ENV

    path = env.get(LOG_CONFIG_ENV)
    if not path:
        return None
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        return f"{LOG_CONFIG_ENV}={path}: cannot be read as YAML or JSON ({exc.__class__.__name__})"
    if not isinstance(raw, dict) or "version" not in raw:
        return (
            f"{LOG_CONFIG_ENV}={path}: expected a logging.config.dictConfig mapping with 'version'"
        )
    return None


def _observability(config: Config, env: Mapping[str, str]) -> list[str]:
    """Where the admin API, /metrics, traces and logs go, as `serve` would set them up."""
    from gateway.core.logs import LOG_CONFIG_ENV
    from gateway.server.tracing import wanted

    s = config.server
    local = "direct local requests only (no server.admin_token)"
    admin = "server.admin_token" if s.admin_token else local
    if s.metrics_token:
        metrics = "server.metrics_token (or the admin token)"
    else:
        metrics = "the admin token" if s.admin_token else local
    if not wanted(env):
        traces = "off (set OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT)"
    elif importlib.util.find_spec("opentelemetry.sdk") is None:
        traces = "asked for by OTEL_*, but the 'tracing' extra is not installed: off"
    elif env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        traces = "to the console (OTEL_TRACES_EXPORTER=console)"
    else:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "the SDK's default endpoint"
        )
        traces = f"OTLP to {_shown(endpoint)}"
    logs = env.get(LOG_CONFIG_ENV)
    return [
        f"admin api: {admin}",
        f"metrics: GET /metrics, {metrics}",
        f"traces: {traces}",
        "logs: " + (f"as {LOG_CONFIG_ENV}={logs} says" if logs else "JSON lines to stderr"),
    ]


def describe(config: Config, env: Mapping[str, str] = os.environ) -> str:
    lines = [f"configuration: {config.source}", "providers:"]
    for p in config.providers:
        state = "enabled" if p.enabled else f"DISABLED ({', '.join(p.missing_env)} not set)"
        where = _shown(p.base_url) or ("built-in" if p.type == "mock" else "(unset)")
        lines.append(f"  {p.name:<16} {p.type:<10} {where:<40} {state}")
    lines.append("models:")
    for m in config.models:
        usable = config.provider(m.provider).enabled
        upstream = f"{m.provider}/{m.upstream}"
        types = ",".join(m.conversation_types)
        note = "" if usable else "  (provider disabled)"
        lines.append(f"  {m.name:<24} -> {upstream:<40} {types}{note}")
    lines.append("routes:")
    for r in config.routes:
        lines.append(f"  {r.name:<12} {r.optimization:<11} {', '.join(r.models)}")
    if config.experiments:
        lines.append("experiments (the store decides whether each still runs):")
    for e in config.experiments:
        arms = ", ".join(
            f"{a.name}={a.model} {share:.0%}" for a, share in zip(e.arms, e.shares(), strict=True)
        )
        lines.append(f"  {e.name:<12} on {e.route}, {e.metric}, {e.split}: {arms}")
    keys = len(config.server.api_keys)
    lines.append(f"client api keys: {keys}" + ("" if keys else " (the gateway is OPEN)"))
    s = config.server
    connections = (
        f"{s.max_connections:,}" if s.max_connections else "half the open-file limit, less 64"
    )
    lines.append(
        f"inbound limits per worker: header timeout {s.header_timeout:g} s, idle timeout "
        f"{s.idle_timeout:g} s, max connections {connections}, max head "
        f"{s.max_header_bytes:,} bytes / {s.max_headers:,} headers, request bodies "
        f"{s.max_body_bytes:,} bytes each and {s.max_body_memory:,} bytes together with "
        "their answers, parsed"
    )
    lines.extend(_observability(config, env))
    return "\n".join(lines)


def _serve(config: Config, path: str, args: argparse.Namespace) -> int:
    import functools

    import uvicorn

    from gateway.core.logs import LOG_CONFIG_ENV, configure_logging
    from gateway.server.protocol import END_GRACE, Inbound, InboundLimits, JoinedWritesProtocol

    level = args.log_level or config.server.log_level
    configure_logging(level)
    os.environ["GATEWISE_CONFIG"] = os.path.abspath(path)
    os.environ["GATEWISE_LOG_LEVEL"] = level
    open_files, _ = raise_open_file_limit()  # before workers are forked: they inherit it
    # Each worker process unpickles its own Inbound: the limits are per worker.
    inbound = Inbound(InboundLimits.of(config.server, open_files))
    options = dict(
        host=args.host,
        port=args.port,
        loop="uvloop",
        # httptools with the inbound limits, head and body joined
        http=functools.partial(JoinedWritesProtocol, inbound=inbound),
        timeout_keep_alive=config.server.idle_timeout,  # uvicorn's own timer does it right
        log_level="warning" if level == "info" else level,
        access_log=args.access_log,
        lifespan="on",
        # The answers under way end at shutdown_timeout, told why (protocol.py); this is
        # uvicorn's cut of whatever could not be told.
        timeout_graceful_shutdown=config.server.shutdown_timeout + END_GRACE,
        # On every response, added by the server itself (the fast path bypasses any
        # middleware): browsers must not sniff a JSON answer or an error into markup.
        headers=[("x-content-type-options", "nosniff")],
        # No `server: uvicorn`: it tells every stranger what to aim at, on every answer.
        server_header=False,
    )
    from gateway.server.workers import (
        STARTUP_FAILURE,
        announce,
        listening,
        logger,
        reserve_all,
        reuse_port_supported,
        run_workers,
    )

    if os.environ.get(LOG_CONFIG_ENV):  # the operator's file configures uvicorn's loggers too
        options["log_config"] = None
    if args.probe_port is not None:
        if not reuse_port_supported():
            print("gatewise: --probe-port needs Linux (SO_REUSEPORT)", file=sys.stderr)
            return 2
        if not 0 < args.probe_port < 65536 or args.probe_port == args.port:
            # 0 would be a random port serving everything, --port's own would serve probes
            # only: neither is what was asked for.
            print("gatewise: --probe-port must be a port of its own, 1-65535", file=sys.stderr)
            return 2
    if args.workers > 1:
        import tempfile

        from gateway.server.metrics import METRICS_DIR_ENV

        # The workers' counts, summed at each scrape; this run's alone, gone after it.
        with tempfile.TemporaryDirectory(prefix="gatewise-metrics-") as directory:
            os.environ[METRICS_DIR_ENV] = directory
            from gateway.server.app import WorkerApp

            return run_workers(options, args.workers, WorkerApp, args.probe_port)
    from gateway.server.app import create_app
    from gateway.server.gctune import tune

    class Server(uvicorn.Server):
        """uvicorn's server, saying where it listens once it does."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                host, port = self.servers[0].sockets[0].getsockname()[:2]
                announce(host, port, probe_port=args.probe_port)

    # Several listening sockets, as each worker of many has (why: gateway/server/workers.py).
    listeners = None
    probe = None
    if reuse_port_supported():
        try:
            listeners, probe = reserve_all(args.host, args.port, args.probe_port)
        except OSError as exc:
            where = listening(args.host, args.port, args.probe_port)
            logger.error("cannot listen on %s: %s", where, exc)
            return STARTUP_FAILURE
    app = create_app(config, probe=probe)
    tune()
    server = Server(uvicorn.Config(app, **options))
    try:
        server.run(sockets=listeners)
    finally:
        for sock in [*(listeners or ()), *([probe] if probe is not None else [])]:
            sock.close()
    return 0 if server.started else STARTUP_FAILURE


def raise_open_file_limit() -> tuple[int, int]:
    """Lift the soft limit on open files to the hard one: every client connection and
    every pooled upstream connection is a file, and a worker holds thousands of streams
    (each one of each). Distributions default the soft limit to 1,024. Returns the
    (soft, hard) limits now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # a container may refuse: serve with what there is
    return soft, hard
