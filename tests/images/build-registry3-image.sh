#!/usr/bin/env bash
# Build registry:3, a test image in the layout of the official v3 image
# (distribution/distribution-library-image): the same Debian registry binary as
# registry:2 (build-registry-image.sh) behind an /entrypoint.sh like upstream's, the
# config at /etc/distribution/config.yml (v3's config-example.yml, as far as the 2.8
# binary reads it) and ENV OTEL_TRACES_EXPORTER=none. It proves the supervisor follows
# the image's layout; it is not v3's registry (that one no Debian release packages).
# Idempotent: an image carrying the same build stamp is left alone.
set -euo pipefail

# shellcheck source=registry-root.sh
source "$(dirname "${BASH_SOURCE[0]}")/registry-root.sh"
registry_inputs build-registry3-image
stamp=$(registry_stamp "$0")
current=$(docker image inspect registry:3 \
    --format '{{ index .Config.Labels "registry-supervisor.test-image" }}' 2>/dev/null || true)
if [[ $current == "$stamp" ]]; then
    exit 0
fi

registry_root /etc/distribution
# Upstream's entrypoint.sh (distribution/distribution-library-image).
cat > "$root"/entrypoint.sh <<'ENTRYPOINT'
#!/bin/sh

set -e

case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac

exec "$@"
ENTRYPOINT
chmod 0755 "$root"/entrypoint.sh
# v3's config-example.yml: debug log, delete enabled, the debug server with Prometheus.
# Left out: storage.tag.concurrencylimit, which 2.8 takes for a second storage driver.
cat > "$root"/etc/distribution/config.yml <<'YAML'
version: 0.1
log:
  level: debug
  fields:
    service: registry
    environment: development
storage:
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  debug:
    addr: :5001
    prometheus:
      enabled: true
      path: /metrics
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV OTEL_TRACES_EXPORTER=none' \
    --change 'ENTRYPOINT ["/entrypoint.sh"]' \
    --change 'CMD ["/etc/distribution/config.yml"]' \
    --change 'EXPOSE 5000' \
    --change 'VOLUME ["/var/lib/registry"]' \
    --change "LABEL registry-supervisor.test-image=$stamp" \
    - registry:3 >/dev/null
echo "build-registry3-image: built registry:3 ($stamp)"
