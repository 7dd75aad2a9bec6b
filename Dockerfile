# syntax=docker/dockerfile:1
# archwarden: admission webhook and operator image for linux/amd64, arm64, ppc64le and s390x.
#
#   make image IMAGE=registry.example:5000/archwarden:0.1.0      (buildah, no daemon: docs/image.md)
#   docker buildx build --platform linux/amd64,linux/arm64,linux/ppc64le \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) -t ... --push .
#
# No emulation anywhere. The build stage runs on the BUILD platform and never executes code of the
# target architecture: it downloads the target's wheels (pip --platform --only-binary=:all:
# --target), hash-checked against requirements/image.txt, into a plain directory. The runtime
# stage has no RUN step at all: it copies that directory onto a base image of the target
# architecture. So a four-platform build runs on one amd64 machine without binfmt_misc/qemu.
#
# No virtualenv: a venv's interpreter symlink would point at the build stage's python, which is
# not the runtime's (/usr/local/bin/python3 in the upstream python image, /usr/bin/python3 in the
# Debian base hack/image/base.sh makes). Packages live in /opt/archwarden/lib on PYTHONPATH and
# the entry point is `python3 -S -m archwarden`: -S keeps the base's own site-packages (the
# upstream image's pip and setuptools) off sys.path, so only the locked packages are importable.
#
# The process runs as UID/GID 65532 (no passwd entry needed), is started without a shell and
# writes nothing outside /tmp, so the root filesystem can be mounted read-only (the chart does).

# Both default to the upstream Python 3.11 image, pinned by the digest of its OCI index:
# docker-library/repo-info, repos/python/remote/3.11-slim-bookworm.md at commit
# 33a22f41ac7bf613bc03380b0317536a9a7fb5e8 (python 3.11.16; the same digest is the one Docker Hub
# served for the tag on 2026-08-28 per public build notes). That index has linux/amd64, arm/v7,
# arm64/v8, 386 and ppc64le but NO s390x: an s390x build needs another BASE_IMAGE, e.g. the
# Debian bookworm base (python3 3.11) that `make image` makes with mmdebstrap.
# BASE_IMAGE must provide python3 3.11 (the wheels are cp311) on PATH; BUILD_IMAGE python3 3.11
# with pip, for the build platform.
ARG BUILD_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

FROM --platform=$BUILDPLATFORM ${BUILD_IMAGE} AS build
ARG TARGETPLATFORM
ARG TARGETARCH
# Builds behind a proxy or a TLS-inspecting gateway: the index to use, and where pip finds the CA
# bundle. The bundle itself comes in as the build secret `pip-cert` (mounted only for the RUN
# steps that download, so it is in no layer): e.g. --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_CERT=/run/secrets/pip-cert
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/ requirements/

# 1. Build tools (setuptools, for the build platform, hash-checked) into their own directory.
# 2. PyYAML: PyPI has no linux/ppc64le wheel, so it is built here from its hash-checked sdist as a
#    pure-Python wheel: PYYAML_FORCE_LIBYAML=0 leaves out the libyaml extension (setup.py's
#    --without-libyaml), which makes the wheel py3-none-any, valid on every target.
# 3. Every other locked package: the target's wheels only (--only-binary=:all: with the target's
#    manylinux tags, glibc 2.17 to 2.36 = bookworm), --require-hashes --no-deps: exactly the lock.
RUN --mount=type=secret,id=pip-cert,target=/run/secrets/pip-cert \
    set -eu; \
    if [ ! -s "$PIP_CERT" ]; then unset PIP_CERT; fi; \
    case "$TARGETARCH" in \
      amd64) arch=x86_64 ;; arm64) arch=aarch64 ;; ppc64le|s390x) arch=$TARGETARCH ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH ($TARGETPLATFORM)" >&2; exit 1 ;; \
    esac; \
    platforms=""; for glibc in $(seq 17 36); do platforms="$platforms --platform manylinux_2_${glibc}_$arch"; done; \
    python3 -m pip install --require-hashes --no-deps --only-binary=:all: --target /opt/build-tools \
      -r requirements/image-build.txt; \
    awk '/^[^ #]/ { keep = ($0 ~ /^pyyaml==/) } keep' requirements/image.txt > /tmp/sdist.txt; \
    awk '/^[^ #]/ { keep = ($0 !~ /^pyyaml==/) } keep' requirements/image.txt > /tmp/wheels.txt; \
    grep -q '^pyyaml==' /tmp/sdist.txt; \
    PYTHONPATH=/opt/build-tools PYYAML_FORCE_LIBYAML=0 python3 -m pip wheel --require-hashes --no-deps \
      --no-build-isolation --no-binary=pyyaml --wheel-dir /wheels -r /tmp/sdist.txt; \
    ls /wheels | grep -iq '^pyyaml-.*-py3-none-any\.whl$'; \
    python3 -m pip install --require-hashes --no-deps --no-compile --only-binary=:all: \
      --implementation cp --python-version 3.11 $platforms --target /opt/archwarden/lib -r /tmp/wheels.txt; \
    rm -rf /opt/archwarden/lib/bin

# archwarden itself last, so that a source change reuses the dependency layer above. Then:
# byte-compiled here, once, because the runtime's root filesystem is read-only; unchecked-hash
# .pyc files never compare source mtimes (which copying between stages may change), and the files
# are immutable in an image anyway; any 3.11.x reads 3.11 bytecode. Last, `--version` runs on the
# build platform: a broken lock or wheel fails here, not in a cluster (it imports no compiled
# extension, so it works for foreign targets too).
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN set -eu; \
    PYTHONPATH=/opt/build-tools python3 -m pip wheel --no-deps --no-build-isolation --no-index \
      --wheel-dir /wheels .; \
    python3 -m pip install --no-deps --no-index --no-compile --target /opt/archwarden/lib \
      /wheels/*.whl; \
    rm -rf /opt/archwarden/lib/bin; \
    python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/archwarden/lib; \
    PYTHONPATH=/opt/archwarden/lib python3 -S -m archwarden --version

FROM ${BASE_IMAGE}
# Set by hack/image/build.sh from pyproject.toml and git; plain defaults for other builders.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="archwarden" \
      org.opencontainers.image.description="Keeps workloads on nodes whose architecture their images support" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /opt/archwarden /opt/archwarden
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only at run time.
# HOME=/tmp: the only writable path (an emptyDir in the chart); libraries that look for a home
# directory (caches, config lookups) find a writable one.
ENV PYTHONPATH=/opt/archwarden/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
# Numeric, so that Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
WORKDIR /tmp
# 9443: admission webhooks (HTTPS); 8080: /metrics, /healthz, /readyz (HTTP).
EXPOSE 9443 8080
ENTRYPOINT ["python3", "-S", "-m", "archwarden"]
CMD ["run", "--config", "/etc/archwarden/config.yaml"]
