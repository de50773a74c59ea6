# One multi-target Dockerfile for every image of stock-portfolio-mlops. Each image holds only what its
# step imports: the package with that step's extra (pyproject.toml), nothing else.
#   components (KFP steps):  ingest, features, train (also runs `configure`: it validates the
#                            hyperparameters with scikit-learn's own checks), promote
#   services:                mlflow-server (tracking server: Postgres driver + S3 client), serving (champion model)
# Build: scripts/build-images.sh [--local-base] [TARGET ...]   (BuildKit; names and tags from components/images.py)
# BuildKit builds each stage once and only the stages a target needs; pip's download cache is a cache
# mount, never a layer. Pinned by constraints.txt; pip, tests, bytecode and headers never reach a final stage.
ARG BASE_IMAGE=python:3.11-slim

# --- build: the base with venv and pip; every venv-* stage starts here -------------------------------
FROM ${BASE_IMAGE} AS build
# binutils: `strip` for the symbol tables many wheels' shared libraries ship (pyarrow's: ~30 MB).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CACHE_DIR=/var/cache/pip \
    PYTHONDONTWRITEBYTECODE=1
COPY constraints.txt /build/
COPY scripts/image-venv.sh /build/

# --- the package as a wheel, built once for every image that installs it ------------------------------
FROM build AS wheel
COPY pyproject.toml /build/project/
# An empty README (pyproject's `readme`): the real one carries the sizes table every full build rewrites,
# which would otherwise invalidate this stage, and with it every image, on the next build.
RUN touch /build/project/README.md
COPY src /build/project/src
COPY components /build/project/components
COPY pipelines /build/project/pipelines
# charts/: a package of the wheel (pyproject's package list), so it must be in the build context.
COPY charts /build/project/charts
RUN --mount=type=cache,target=/var/cache/pip \
    python3 -m venv /opt/builder \
 && /opt/builder/bin/pip wheel --no-deps --wheel-dir /wheels /build/project

# --- one virtualenv per image -------------------------------------------------------------------------
FROM build AS venv-ingest
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh --extra ingest --kfp-executor

FROM build AS venv-features
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh --extra features --kfp-executor

FROM build AS venv-train
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh --extra train --kfp-executor

FROM build AS venv-promote
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh --extra promote --kfp-executor

FROM build AS venv-serving
COPY --from=wheel /wheels /wheels
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh --extra serving

# The MLflow server: the full mlflow (UI, SQL stores) with the Postgres driver and the S3 client, nothing
# of ours. mlflow[auth] = Flask-WTF, which `mlflow server --app-name basic-auth` (production) imports at
# start; pinned here because the dev venv (constraints.txt) does not install it. The server never imports
# the modelling libraries the full mlflow distribution depends on (scikit-learn, scipy, matplotlib, skops:
# model flavours, plots) nor docker (image building): dropped.
FROM build AS venv-mlflow-server
RUN --mount=type=cache,target=/var/cache/pip sh /build/image-venv.sh \
    --drop scikit-learn --drop scipy --drop skops --drop matplotlib --drop contourpy --drop kiwisolver \
    --drop fonttools --drop pillow --drop cycler --drop pyparsing --drop docker \
    --requirements 'mlflow[auth]' psycopg2-binary boto3 Flask-WTF==1.3.0 WTForms==3.3.2

# --- runtime: the base without what no image runs, flattened into one layer ------------------------------
# Gone: documentation, man pages, translations, glibc's iconv modules (Python's codecs are its own),
# perl (dpkg's maintainer scripts; nothing installs packages at run time), venv's bundled wheels, and
# Python's test, lib2to3 and pydoc data. Kept: the dpkg database (image scanners read it), tzdata.
FROM ${BASE_IMAGE} AS runtime-rootfs
# A fixed non-root user (UID 1001, as the Kubernetes manifests' securityContext expects).
RUN groupadd --gid 1001 app && useradd --uid 1001 --gid 1001 --create-home --home-dir /home/app app \
 && rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* /usr/share/python-wheels \
           /usr/lib/x86_64-linux-gnu/gconv /usr/bin/perl /usr/bin/perl5* /usr/lib/x86_64-linux-gnu/perl-base \
           /usr/share/perl5 /usr/lib/python3*/test /usr/lib/python3*/lib2to3 /usr/lib/python3*/pydoc_data \
           /usr/local/lib/python3*/test /usr/local/lib/python3*/lib2to3 /usr/local/lib/python3*/pydoc_data \
           /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/log/*

FROM scratch AS runtime
COPY --from=runtime-rootfs / /
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    HOME=/home/app \
    MPLCONFIGDIR=/tmp/matplotlib
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="stock-portfolio-mlops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /home/app

# --- the component images: no ENTRYPOINT (Kubeflow and kfp.local's DockerRunner give the step's command)
FROM runtime AS ingest
COPY --from=venv-ingest /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops ingest" \
      org.opencontainers.image.description="KFP step: read and validate S&P 500 OHLCV into the canonical panel"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS features
COPY --from=venv-features /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops features" \
      org.opencontainers.image.description="KFP step: point-in-time features and labels"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS train
COPY --from=venv-train /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops train" \
      org.opencontainers.image.description="KFP steps configure and train: validate the run config; walk-forward training of one algorithm"
USER 1001
CMD ["portfolio-mlops", "--help"]

FROM runtime AS promote
COPY --from=venv-promote /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops promote" \
      org.opencontainers.image.description="KFP step: evaluation, MLflow tracking, registration and promotion"
USER 1001
CMD ["portfolio-mlops", "--help"]

# --- MLflow tracking server ----------------------------------------------------------------------------
FROM runtime AS mlflow-server
COPY --from=venv-mlflow-server /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops mlflow-server" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support"
# Job execution spawns extra workers (~2 GB); off unless asked for.
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1001
EXPOSE 5000
ENTRYPOINT ["mlflow", "server"]
CMD ["--host", "0.0.0.0", "--port", "5000", "--workers", "1"]

# --- serving: `portfolio-mlops serve`, following models:/<model>@champion -------------------------------
FROM runtime AS serving
COPY --from=venv-serving /opt/venv /opt/venv
LABEL org.opencontainers.image.title="portfolio-mlops serving" \
      org.opencontainers.image.description="Serves models:/<model>@champion over HTTP and follows the alias (/health, /ping, /version, /invocations)"
# MODEL_URI is not set here: `serve` defaults to portfolio_mlops.names.CHAMPION_MODEL_URI (the one home
# of that name) and the Deployment sets it explicitly.
ENV HOST=0.0.0.0 PORT=8080 POLL_SECONDS=10
USER 1001
EXPOSE 8080
# Starts without a model: not ready (/ping 503) until the alias resolves, never a crash loop. Versions are
# downloaded to /tmp (writable: a tmpfs under a read-only root filesystem).
ENTRYPOINT ["portfolio-mlops", "serve"]
