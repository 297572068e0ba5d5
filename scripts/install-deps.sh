#!/usr/bin/env bash
# System packages the tests use, from Debian. Idempotent; skips what is present.
set -euo pipefail
need=()
command -v bash >/dev/null || need+=(bash)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi
