# syntax=docker/dockerfile:1
# trunner container image: build stage installs the project into a venv, runtime stage copies only the venv.
#   docker build -t trunner:0.1.0 --build-arg VERSION=0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/trunner
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trunner ./trunner
# Non-editable install of the runtime dependencies only (no dev extra); pip byte-compiles the package.
RUN /opt/trunner/bin/pip install . \
    && /opt/trunner/bin/pip uninstall --yes pip setuptools wheel

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="trunner" \
      org.opencontainers.image.description="A job runner for OpsLevel built on trio: Kubernetes pods, bounded log shipping, clean shutdown." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# tini is PID 1: it forwards SIGTERM to trunner (a Python PID 1 without a handler would ignore it) and reaps zombies.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 trunner \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trunner
COPY --from=build /opt/trunner /opt/trunner
ENV PATH=/opt/trunner/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
# Metrics, /healthz and /readyz.
EXPOSE 10354
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "trunner"]
CMD ["run"]
