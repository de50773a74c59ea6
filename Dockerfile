# One multi-target Dockerfile for every image of stock-portfolio-mlops.
#   components (KFP steps):  ingest, features, train, promote
#   services:                mlflow-server (tracking server: Postgres driver + S3 client), serving (champion model)
# Build: scripts/build-images.sh [--local-base]   (names and tags come from components/images.py)
# No build tools reach a final stage: everything installs from wheels, pinned by constraints.txt.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/app \
    MPLCONFIGDIR=/tmp/matplotlib
# A fixed non-root user (UID 1001, as the Kubernetes manifests' securityContext expects).
RUN groupadd --gid 1001 app && useradd --uid 1001 --gid 1001 --create-home --home-dir /home/app app

# --- the package and its runtime dependencies, shared by the four component images and serving ---
FROM base AS package-build
COPY constraints.txt pyproject.toml README.md /build/
COPY src /build/src
COPY components /build/components
COPY pipelines /build/pipelines
# charts/: `portfolio-mlops cluster` reads the namespace from charts.values (the one home of that name).
COPY charts /build/charts
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -c /build/constraints.txt /build \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip /opt/venv/lib/python3.11/site-packages/setuptools

FROM base AS components
ARG VERSION=0.0.0
ARG REVISION=unknown
COPY --from=package-build /opt/venv /opt/venv
LABEL org.opencontainers.image.source="stock-portfolio-mlops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 1001
WORKDIR /home/app
# No ENTRYPOINT: Kubeflow (and kfp.local's DockerRunner) replace the command with the step's own.
CMD ["portfolio-mlops", "--help"]

FROM components AS ingest
LABEL org.opencontainers.image.title="portfolio-mlops ingest" \
      org.opencontainers.image.description="KFP step: read and validate S&P 500 OHLCV into the canonical panel"

FROM components AS features
LABEL org.opencontainers.image.title="portfolio-mlops features" \
      org.opencontainers.image.description="KFP step: point-in-time features and labels"

FROM components AS train
LABEL org.opencontainers.image.title="portfolio-mlops train" \
      org.opencontainers.image.description="KFP step: walk-forward training of one algorithm"

FROM components AS promote
LABEL org.opencontainers.image.title="portfolio-mlops promote" \
      org.opencontainers.image.description="KFP step: evaluation, MLflow tracking, registration and promotion"

# --- MLflow tracking server: MLflow, the Postgres driver and the S3 client, nothing of ours -------
FROM base AS mlflow-build
COPY constraints.txt /build/
# mlflow[auth] = Flask-WTF, which `mlflow server --app-name basic-auth` (production) imports at start.
# Pinned here because the dev venv (constraints.txt) does not install it.
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -c /build/constraints.txt 'mlflow[auth]' psycopg2-binary boto3 \
      Flask-WTF==1.3.0 WTForms==3.3.2 \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/venv/lib/python3.11/site-packages/pip /opt/venv/lib/python3.11/site-packages/setuptools

FROM base AS mlflow-server
ARG VERSION=0.0.0
ARG REVISION=unknown
COPY --from=mlflow-build /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops mlflow-server" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support" \
      org.opencontainers.image.version="${VERSION}" org.opencontainers.image.revision="${REVISION}"
# Job execution spawns extra workers (~2 GB); off unless asked for.
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1001
WORKDIR /home/app
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--workers", "1"]

# --- serving: `portfolio-mlops serve`, following models:/<model>@champion ---------------------------
# The package's venv (MLflow, scikit-learn, skops and uvicorn come with it): serving is our code now.
FROM base AS serving
ARG VERSION=0.0.0
ARG REVISION=unknown
COPY --from=package-build /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops serving" \
      org.opencontainers.image.description="Serves models:/<model>@champion over HTTP and follows the alias (/health, /ping, /version, /invocations)" \
      org.opencontainers.image.source="stock-portfolio-mlops" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" org.opencontainers.image.revision="${REVISION}"
ENV MODEL_URI=models:/sp500-stock-ranker@champion HOST=0.0.0.0 PORT=8080 POLL_SECONDS=10
USER 1001
WORKDIR /home/app
EXPOSE 8080
# Starts without a model: not ready (/ping 503) until the alias resolves, never a crash loop. Versions are
# downloaded to /tmp (writable: a tmpfs under a read-only root filesystem).
ENTRYPOINT ["portfolio-mlops", "serve"]
