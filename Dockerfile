FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md gateway.yaml ./
COPY gateway ./gateway
COPY providers ./providers
COPY admin_ui ./admin_ui
RUN pip install --no-cache-dir .
EXPOSE 8080
# Mount your own configuration at /app/gateway.yaml and pass keys as environment variables.
CMD ["gatewise", "serve", "--host", "0.0.0.0", "--port", "8080", "--config", "/app/gateway.yaml"]
