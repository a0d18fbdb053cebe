# Sourced by build-registry-image.sh and build-registry3-image.sh (not run by tests/run,
# which runs build-*.sh): the parts of the two registry test images that are the same.
#
#   registry_inputs NAME        fail unless Debian's registry binary and busybox are there
#   registry_stamp [FILE...]    the build stamp of those inputs, this file (what the root
#                               holds) and FILE...
#   registry_root CONFIG_DIR    a new root in $root: the binary, busybox (sh, sleep: the
#                               network holder runs the image's `sleep`; timeout: fleet gc
#                               bounds its collector with `timeout -s KILL N`, as the official
#                               alpine image's busybox allows), libc, CONFIG_DIR, the data
#                               dir and /tmp; removed when the script exits

BIN=/usr/bin/docker-registry
BUSYBOX=/bin/busybox

registry_inputs() {
    local needed
    for needed in "$BIN:docker-registry" "$BUSYBOX:busybox-static"; do
        if [[ ! -x ${needed%%:*} ]]; then
            echo "$1: ${needed%%:*} missing; apt-get install ${needed##*:}" >&2
            exit 1
        fi
    done
}

registry_stamp() {
    cat "$BIN" "$BUSYBOX" "${BASH_SOURCE[0]}" "$@" | sha256sum | cut -c1-16
}

registry_root() {
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/bin "$root"/lib/x86_64-linux-gnu "$root"/lib64 \
        "$root$1" "$root"/var/lib/registry "$root"/tmp
    cp "$BIN" "$root"/bin/registry
    cp "$BUSYBOX" "$root"/bin/busybox
    local applet
    for applet in sh sleep timeout; do ln -s busybox "$root/bin/$applet"; done
    cp -L /lib/x86_64-linux-gnu/libc.so.6 "$root"/lib/x86_64-linux-gnu/
    cp -L /lib64/ld-linux-x86-64.so.2 "$root"/lib64/
    chmod 1777 "$root"/tmp
}
