#!/usr/bin/env bash
# Build dist/registry-supervisor_<version>_<arch>.deb with dpkg-deb.
#
# The package ships wheels, not a virtual environment: a venv holds absolute paths and the
# interpreter it was made with, so it is made on the target by postinst, at its final path
# /opt/registry-supervisor, with the target's own python3 (`python3 -m venv`, then
# `pip install --no-index --find-links` from the bundled wheels; no network needed). That
# keeps the application's `supervisor` module away from every other Python package,
# Supervisor's (supervisord) included.
#
# Wheels are bundled for each Python in PY_TARGETS (default 3.11 3.12 3.13: Debian 12 and
# 13, Ubuntu 24.04), so the one binary dependency (pydantic-core) matches whichever
# python3 the target has. Every target gets the same versions as the build's own
# resolution.
#
# Needs: python3 with venv (apt-get install python3-venv), dpkg-deb, and PyPI.
# Usage: packaging/build-deb.sh [OUTPUT_DIR]   (default: dist/ at the repository root)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-$repo/dist}
PYTHON=${PYTHON:-/usr/bin/python3}
PY_TARGETS=${PY_TARGETS:-"3.11 3.12 3.13"}
PKG=registry-supervisor

die() {
    echo "build-deb: $*" >&2
    exit 1
}

command -v dpkg-deb >/dev/null || die "dpkg-deb missing; apt-get install dpkg"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot make a venv; apt-get install python3-venv"

version=$("$PYTHON" -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
' "$repo/pyproject.toml")
arch=$(dpkg --print-architecture)
case $arch in
amd64) machine=x86_64 ;;
arm64) machine=aarch64 ;;
*) die "architecture $arch: no manylinux wheels known for it" ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# A throwaway build environment from the system python3: nothing of the developer's venv
# (or of an editable install) leaks into the package.
"$PYTHON" -m venv "$work/buildenv"
pip=("$work/buildenv/bin/python" -m pip --quiet)

# 1. Our wheel and all dependencies for the build's Python. Dependencies published only as
#    source (sdnotify) become pure-Python wheels here.
wheels=$work/wheels
"${pip[@]}" wheel --wheel-dir "$wheels" "$repo"
ls "$wheels"/${PKG//-/_}-"$version"-*.whl >/dev/null 2>&1 ||
    die "no wheel of $PKG $version was built"

# 2. The same versions as binary wheels for every other target Python.
"$PYTHON" - "$wheels" >"$work/constraints.txt" <<'PY'
import pathlib, sys
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    print(f"{name}=={version}")
PY
build_py=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
for py in $PY_TARGETS; do
    [[ $py == "$build_py" ]] && continue
    "${pip[@]}" download --dest "$wheels" --find-links "$wheels" \
        --only-binary=:all: --implementation cp --python-version "$py" \
        --platform "manylinux2014_$machine" --platform "manylinux_2_17_$machine" \
        --constraint "$work/constraints.txt" "$PKG==$version"
done

# 3. The package tree.
root=$work/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/$PKG" "$root/usr/share/$PKG/wheels" "$root/usr/share/doc/$PKG"
install -m 0644 "$wheels"/*.whl "$root/usr/share/$PKG/wheels/"
install -m 0644 "$here/registry-supervisor.service" "$root/lib/systemd/system/"
install -m 0644 "$here/registry.env" "$root/etc/$PKG/registry.env"
ln -s "/opt/$PKG/bin/$PKG" "$root/usr/bin/$PKG"
if [[ -f $repo/README.md ]]; then
    install -m 0644 "$repo/README.md" "$root/usr/share/doc/$PKG/README.md"
fi
cat >"$root/usr/share/doc/$PKG/copyright" <<EOF
registry-supervisor $version, MIT License.
The bundled wheels in /usr/share/$PKG/wheels carry their own licenses in their metadata.
EOF

cat >"$root/DEBIAN/conffiles" <<EOF
/etc/$PKG/registry.env
EOF

max_py=$(tr ' ' '\n' <<<"$PY_TARGETS" | sort -V | tail -n 1)
lowest_py=$(tr ' ' '\n' <<<"$PY_TARGETS" | sort -V | head -n 1)
next_py="${max_py%%.*}.$((${max_py#*.} + 1))"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $version
Architecture: $arch
Maintainer: registry-supervisor developers <root@localhost>
Installed-Size: $installed_kb
Depends: python3 (>= $lowest_py), python3 (<< $next_py), python3-venv
Recommends: docker.io | docker-ce
Section: admin
Priority: optional
Description: keeps a private Docker registry container running and healthy
 registry-supervisor runs the Docker registry container ("docker run registry")
 and keeps it running and answering: it follows Docker's events, probes /v2/,
 restarts with capped backoff, recreates a removed container, adopts a running
 one across its own restarts, and tells systemd the truth (Type=notify: ready
 only once the registry answers, STATUS=, watchdog).
 .
 The application lives in its own virtual environment in /opt/registry-supervisor,
 created at install time from the bundled wheels. Settings:
 /etc/registry-supervisor/registry.env. The service is not started on install:
 systemctl enable --now registry-supervisor
EOF

cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
# Make the application's venv from the bundled wheels, offline, with this machine's
# python3; reload systemd. Never starts the service; restarts it on upgrade only if it
# runs (the supervisor adopts the running registry: no downtime).
set -e
VENV=/opt/$PKG
WHEELS=/usr/share/$PKG/wheels
if [ "\$1" = configure ]; then
    rm -rf "\$VENV"
    python3 -m venv "\$VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "\$VENV/bin/python" -m pip install --quiet \\
        --no-index --find-links "\$WHEELS" "$PKG==$version"
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        if [ -n "\$2" ]; then
            systemctl try-restart $PKG.service || true
        fi
    fi
fi
exit 0
EOF

cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
# On removal stop the service (which stops the registry when MY_REG_STOP_ON_EXIT is true).
# On upgrade leave it running: postinst restarts it into the new version.
set -e
if [ "\$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop $PKG.service || true
fi
exit 0
EOF

cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
# remove: delete the venv (made by postinst, so dpkg does not own it).
# purge: also forget the enablement and our state dir. The registry's data dir
# (MY_REG_DIR, /var/lib/my_registry by default) is never touched.
set -e
case "\$1" in
remove)
    rm -rf /opt/$PKG
    ;;
purge)
    rm -rf /opt/$PKG /var/lib/$PKG
    rm -f /etc/systemd/system/multi-user.target.wants/$PKG.service
    ;;
esac
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/${PKG}_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
