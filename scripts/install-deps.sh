#!/usr/bin/env bash
# System packages the tests use, from Debian. Idempotent; skips what is present.
set -euo pipefail
need=()
command -v bash >/dev/null || need+=(bash)
command -v ps >/dev/null || need+=(procps)
# openssl makes the test PKI (test/support/certs.ts); minimal Debian images (bookworm-slim) lack it.
command -v openssl >/dev/null || need+=(openssl)
# bwrap (the filesystem sandbox of instances) and setpriv (their user switch): src/supervisor/isolation/launch.ts and its tests.
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v setpriv >/dev/null || need+=(util-linux)
# The Prometheus server (and promtool) that test/e2e/prometheus.test.ts runs to scrape a real node.
[ -x /usr/bin/prometheus ] || need+=(prometheus)
# wrk and nginx for bench/gateway (npm run bench:gateway): the load generator and the reference proxy.
command -v wrk >/dev/null || need+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # The tests start their own Prometheus and nginx on free ports: keep the
    # packages from starting system-wide services on 80 and 9090.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
      chmod +x /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi
