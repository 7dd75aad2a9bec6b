#!/usr/bin/env bash
# `make demo`: a local registry with sample multi-arch and single-arch images, resolved by
# archwarden. Everything it starts is stopped when it ends (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python hack/demo.py "$@"
