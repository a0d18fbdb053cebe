#!/usr/bin/env bash
# Build the image in which tests/systemd boots a real systemd: a minimal Debian bookworm
# root made by debootstrap (systemd, dbus, procps, python3, python3-venv), imported with
# `docker import` and tagged registry-supervisor-systemd:test. No image can be pulled on
# our machines, so this is built from Debian's packages.
#
# Idempotent and cheap when nothing changed: the image carries a stamp (a hash of this
# script) as a label, and an image with the current stamp is reused. Changing this script
# rebuilds it. debootstrap takes about a minute and 300 MB of scratch space.
#
# debootstrap is given no mirror on purpose: its default one serves.
set -euo pipefail

IMAGE=${SYSTEMD_TEST_IMAGE:-registry-supervisor-systemd:test}
LABEL=registry-supervisor.test-image
SUITE=bookworm

stamp=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
# One build at a time: a second caller waits, then finds the image built.
exec 9>/var/lock/registry-supervisor-systemd-image.lock
flock 9
current=$(docker image inspect "$IMAGE" \
    --format "{{ index .Config.Labels \"$LABEL\" }}" 2>/dev/null || true)
if [[ $current == "$stamp" ]]; then
    exit 0
fi
previous=$(docker image inspect "$IMAGE" --format '{{ .Id }}' 2>/dev/null || true)

if ! command -v debootstrap >/dev/null; then
    echo "build-systemd-image: debootstrap missing; apt-get install debootstrap" >&2
    exit 1
fi

root=$(mktemp -d /var/tmp/registry-supervisor-rootfs.XXXXXX)
cleanup() {
    # debootstrap mounts /proc and /sys inside the root while it works; a failed run can
    # leave them mounted, and rm -rf must never walk into them.
    awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$root"
}
trap cleanup EXIT

started=$SECONDS
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,procps,python3,python3-venv,ca-certificates \
    "$SUITE" "$root" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    rm -f "$root.log"
    echo "build-systemd-image: debootstrap failed" >&2
    exit 1
}
rm -f "$root.log"

# Units that have nothing to do in a container, or fail there and turn
# `systemctl is-system-running` to "degraded": no consoles, no kernel modules, no udev,
# a read-only /sys we must not remount.
for unit in \
    getty@tty1.service console-getty.service getty.target \
    systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
    systemd-modules-load.service systemd-remount-fs.service systemd-firstboot.service \
    systemd-sysctl.service systemd-hwdb-update.service systemd-random-seed.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
ln -sf /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
# An empty machine-id makes systemd generate one at each boot: every container differs.
: >"$root/etc/machine-id"
# Keep the journal in memory: the container is thrown away after each test session.
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/volatile.conf"
# Trim what a test never needs (apt's package lists, docs) to keep the image small.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/*

tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["/lib/systemd/systemd"]' \
    --change 'ENV container=docker' \
    --change "LABEL $LABEL=$stamp" \
    - "$IMAGE" >/dev/null
if [[ -n $previous ]]; then
    # The tag moved on: drop the outdated image unless a container still uses it.
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "build-systemd-image: built $IMAGE ($stamp) in $((SECONDS - started)) s"
