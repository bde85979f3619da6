# Image for scheduler/kubernetes-cronjob.yaml: the package and scheduler/run.sh, run as a
# non-root user. /app is the project folder: config/ comes from a ConfigMap, credentials and
# the PostgreSQL ledger URL from a Secret (environment), state/ and out/ are writable volumes.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres]'
COPY scheduler ./scheduler
RUN mkdir -p /app/config /app/state /app/out \
    && chown 65534:65534 /app/state /app/out \
    && chmod 0755 /app/scheduler/run.sh
ENV FUNNELVALUE_HOME=/app \
    FUNNELVALUE_LOG=- \
    FUNNELVALUE_LOG_DIR=/app/state
USER 65534:65534
ENTRYPOINT ["/app/scheduler/run.sh"]
