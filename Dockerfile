FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md gateway.yaml ./
COPY gateway ./gateway
COPY providers ./providers
COPY admin_ui ./admin_ui
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --create-home gatewise
# Runs as an unprivileged user; the embedded SQLite store lives in /data unless
# GATEWISE_STORAGE_URL names another (postgresql://... for a fleet, see compose.yaml).
USER gatewise
ENV GATEWISE_STORAGE_URL=sqlite:////data/gatewise.db
VOLUME ["/data"]
# 8080 serves clients; 8081 answers only /healthz, /readyz and /metrics, on a listener of
# its own, so a worker busy with thousands of streams still answers its probes in time
# (a probe on 8080 waits in the accept queue with the clients, and a failed health check
# restarts the container, cutting every stream it holds).
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"]
# Mount your own configuration at /app/gateway.yaml and pass keys as environment variables.
CMD ["gatewise", "serve", "--host", "0.0.0.0", "--port", "8080", "--probe-port", "8081", "--config", "/app/gateway.yaml"]
