# The project's image: the exchange's Python processes (matcher, ledger, gateway, operator).
#
# Docker host:  make wheels web && docker build -t exchange-platform .
# This repo:    make image   (buildah on a debootstrap base; see README "Local cluster")
#
# The wheels come from build/wheels (`make wheels` downloads them on the host with pip), so
# the build itself never talks to a package index and works offline with any base that has
# python3 with venv. The result runs as a non-root user and needs no writable root
# filesystem: bytecode is compiled at build time and nothing is written at runtime outside
# mounted volumes.

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
# Dependencies first: this layer is rebuilt only when the wheels change, not the code.
COPY build/wheels /wheels
RUN /opt/venv/bin/pip install --quiet --requirement /wheels/requirements.txt
COPY pyproject.toml README.md /src/
COPY contracts /src/contracts
COPY workloads /src/workloads
COPY operator /src/operator
# pip and setuptools are build tools: the runtime venv does without them.
RUN /opt/venv/bin/pip install --quiet --no-deps /src \
    && /opt/venv/bin/python -m compileall -q /opt/venv \
    && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE}
COPY --from=build /opt/venv /opt/venv
# The web UI the gateway serves at / (built on the host: `npm run build` in workloads/web;
# on a Docker host run `make web` first).
COPY workloads/web/dist /opt/web
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    EDGE_WEB_DIR=/opt/web
USER 10001:10001
WORKDIR /tmp
CMD ["python3", "-c", "import contracts, kubernetes; print('exchange-platform image')"]
