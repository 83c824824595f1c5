#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for tests/jobs/service/test_dashboard.py (idempotent: skipped when
# `chromium` is already on PATH). The dashboard test fails under CI=1 without it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core >&2
command -v chromium >/dev/null
