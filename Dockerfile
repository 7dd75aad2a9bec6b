# syntax=docker/dockerfile:1
# archwarden: admission webhook and operator image.
#
#   docker build -t archwarden:dev .
#
# Two stages: `build` installs archwarden and its dependencies into a virtualenv (pip install .
# from this source tree, wheels only: nothing is compiled); the runtime stage copies only that
# virtualenv onto a fresh python:3.11-slim. The same base in both stages keeps the venv's
# interpreter symlinks valid. The process runs as UID/GID 65532 (not root, no capabilities), is
# started without a shell (exec-form ENTRYPOINT) and writes nothing outside /tmp, so the root
# filesystem can be mounted read-only (the Helm chart does).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/archwarden
WORKDIR /src
# Only what the build needs (see .dockerignore): metadata first, then the package.
COPY pyproject.toml README.md ./
COPY operator ./operator
# --only-binary: every dependency ships manylinux wheels; a source build would mean a missing
# wheel, better noticed here than compiled into the image. pip byte-compiles what it installs,
# so the read-only runtime never needs to write .pyc files.
RUN /opt/archwarden/bin/pip install --only-binary=:all: --no-binary=archwarden . \
 && /opt/archwarden/bin/archwarden --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="archwarden" \
      org.opencontainers.image.description="Keeps workloads on nodes whose architecture their images support" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/archwarden /opt/archwarden
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only at run time.
# HOME=/tmp: the only writable path (an emptyDir in the chart); libraries that look for a home
# directory (caches, config lookups) find a writable one.
ENV PATH=/opt/archwarden/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# Numeric, so that Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
WORKDIR /tmp
# 9443: admission webhooks (HTTPS); 8080: /metrics, /healthz, /readyz (HTTP).
EXPOSE 9443 8080
ENTRYPOINT ["archwarden"]
CMD ["run", "--config", "/etc/archwarden/config.yaml"]
