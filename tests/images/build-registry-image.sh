#!/usr/bin/env bash
# Build the registry test image from Debian's docker-registry package (the CNCF
# distribution registry, 2.8) with `docker import`, and tag it registry:2 and
# registry:latest. No image can be pulled on our machines, so this stands in for
# the official `registry` image: same binary, same config.yml, same entrypoint.
# The official image is built on Alpine, so it carries busybox: so does this one
# (busybox-static), because the supervisor's network holder runs the image's `sleep`.
# Idempotent: an image carrying the same build stamp is left alone.
set -euo pipefail

# shellcheck source=registry-root.sh
source "$(dirname "${BASH_SOURCE[0]}")/registry-root.sh"
registry_inputs build-registry-image
stamp=$(registry_stamp)
current=$(docker image inspect registry:latest \
    --format '{{ index .Config.Labels "registry-supervisor.test-image" }}' 2>/dev/null || true)
if [[ $current == "$stamp" ]] && docker image inspect registry:2 >/dev/null 2>&1; then
    exit 0
fi

registry_root /etc/docker/registry
# The official image's config.yml (distribution/distribution cmd/registry/config-docker.yml).
cat > "$root"/etc/docker/registry/config.yml <<'YAML'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML
tar -C "$root" -c . | docker import \
    --change 'ENTRYPOINT ["/bin/registry", "serve"]' \
    --change 'CMD ["/etc/docker/registry/config.yml"]' \
    --change 'EXPOSE 5000' \
    --change 'VOLUME ["/var/lib/registry"]' \
    --change "LABEL registry-supervisor.test-image=$stamp" \
    - registry:2 >/dev/null
docker tag registry:2 registry:latest
echo "build-registry-image: built registry:2 and registry:latest ($stamp)"
