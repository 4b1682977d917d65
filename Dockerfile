# trunner container image: the build stage installs the locked dependencies (requirements.lock, every file
# checked by its hash) and the project into a venv; the runtime stage copies only the venv.
#   docker build --build-arg VERSION="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')" .
# Build arguments: PYTHON_IMAGE (base, pinned by tag), PYTHON_DIGEST (optional sha256:... of that tag),
# VERSION, REVISION, SOURCE and CREATED (the org.opencontainers.image labels).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG PYTHON_DIGEST=

FROM ${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/trunner
WORKDIR /src
COPY requirements.lock ./
RUN /opt/trunner/bin/pip install --require-hashes --no-deps --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY trunner ./trunner
# The project itself: no dependency resolution and no download (everything it needs is installed above,
# the build backend included); pip byte-compiles the package.
RUN /opt/trunner/bin/pip install --no-deps --no-index --no-build-isolation . \
    && /opt/trunner/bin/pip uninstall --yes pip setuptools \
    && rm -rf /src

FROM ${PYTHON_IMAGE}${PYTHON_DIGEST:+@}${PYTHON_DIGEST} AS runtime
ARG PYTHON_IMAGE
ARG PYTHON_DIGEST
ARG VERSION
ARG REVISION=
ARG SOURCE=
ARG CREATED=
LABEL org.opencontainers.image.title="trunner" \
      org.opencontainers.image.description="A job runner for OpsLevel built on trio: Kubernetes pods, bounded log shipping, clean shutdown." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      org.opencontainers.image.base.digest="${PYTHON_DIGEST}"
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
