#!/usr/bin/env bash
# Build dist/registry-supervisor_<version>_<arch>.deb with dpkg-deb.
#
# The package ships wheels, not a virtual environment: a venv holds absolute paths and the
# interpreter it was made with, so it is made on the target by postinst (debian/postinst),
# at its final path under /opt/registry-supervisor, with the target's own python3
# (`python3 -m venv`, then `pip install --no-index --find-links` from the bundled wheels;
# no network needed). That keeps the application's `supervisor` module away from every
# other Python package, Supervisor's (supervisord) included.
#
# Wheels are bundled for each Python in PY_TARGETS (default 3.11 3.12 3.13: Debian 12 and
# 13, Ubuntu 24.04), so the binary dependencies (pydantic-core, cryptography, ...) match
# whichever python3 the target has, and for glibc up to GLIBC_BASELINE (default 2.36,
# Debian 12's, the oldest target). Every target gets the same versions as the build's own
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
GLIBC_BASELINE=${GLIBC_BASELINE:-2.36}
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
# PEP 440 pre-releases sort before the release in Debian only with a tilde: 1.0rc1 -> 1.0~rc1.
deb_version=$(sed -E 's/^([0-9.]+)(a|b|rc|\.dev)([0-9]+)/\1~\2\3/' <<<"$version")
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
#    source (sdnotify) become pure-Python wheels here. Built from a copy of the sources:
#    setuptools reuses a build/ directory in place, and stale modules there would end up
#    in the wheel.
src=$work/src
mkdir -p "$src"
cp -a "$repo/pyproject.toml" "$repo/supervisor" "$src/"
for extra in README.md LICENSE; do
    if [[ -f $repo/$extra ]]; then cp -a "$repo/$extra" "$src/"; fi
done
find "$src" -name __pycache__ -prune -exec rm -rf {} +
wheels=$work/wheels
"${pip[@]}" wheel --wheel-dir "$wheels" "$src"
ls "$wheels"/${PKG//-/_}-"$version"-*.whl >/dev/null 2>&1 ||
    die "no wheel of $PKG $version was built"

# 2. The same versions as binary wheels for every other target Python.
"$PYTHON" - "$wheels" >"$work/constraints.txt" <<'PY'
import pathlib, sys
for whl in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    print(f"{name}=={version}")
PY
# pip does not widen a given manylinux platform to the older ones it implies: list them
# all, from the baseline down to the legacy aliases.
platforms=()
for ((minor = ${GLIBC_BASELINE#2.}; minor >= 17; minor--)); do
    platforms+=(--platform "manylinux_2_${minor}_$machine")
done
for legacy in manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${legacy}_$machine")
done
# The build's own Python too: step 1 took whatever suits the build machine's glibc.
for py in $PY_TARGETS; do
    "${pip[@]}" download --dest "$wheels" --find-links "$wheels" \
        --only-binary=:all: --implementation cp --python-version "$py" "${platforms[@]}" \
        --constraint "$work/constraints.txt" "$PKG==$version"
done

# 3. The package tree.
root=$work/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/$PKG" "$root/usr/share/$PKG/wheels" "$root/usr/share/doc/$PKG"
install -m 0644 "$wheels"/*.whl "$root/usr/share/$PKG/wheels/"
install -m 0644 "$here/registry-supervisor.service" "$root/lib/systemd/system/"
# Scheduled garbage collection: shipped, not enabled (systemctl enable --now ...gc.timer).
install -m 0644 "$here/registry-supervisor-gc.service" "$here/registry-supervisor-gc.timer" \
    "$root/lib/systemd/system/"
# Scheduled image update: shipped, not enabled (systemctl enable --now ...update.timer).
install -m 0644 "$here/registry-supervisor-update.service" \
    "$here/registry-supervisor-update.timer" "$root/lib/systemd/system/"
# The Grafana dashboard for MY_REG_METRICS_ADDR: imported by the admin, never by us.
install -d -m 0755 "$root/usr/share/$PKG/grafana"
install -m 0644 "$here/grafana/registry-supervisor.json" "$root/usr/share/$PKG/grafana/"
install -d -m 0755 "$root/usr/share/$PKG/haproxy"
install -m 0644 "$here/haproxy/registry-supervisor.cfg" "$root/usr/share/$PKG/haproxy/"
# 0600: the admin adds REGISTRY_* secrets to it (dpkg-deb keeps the tree's modes).
install -m 0600 "$here/registry.env" "$root/etc/$PKG/registry.env"
ln -s "/opt/$PKG/current/bin/$PKG" "$root/usr/bin/$PKG"
# README.md links to docs/ and CHANGELOG.md beside it: the same tree, so the links resolve.
for doc in README.md CHANGELOG.md; do
    if [[ -f $repo/$doc ]]; then install -m 0644 "$repo/$doc" "$root/usr/share/doc/$PKG/$doc"; fi
done
if [[ -d $repo/docs ]]; then
    install -d -m 0755 "$root/usr/share/doc/$PKG/docs"
    install -m 0644 "$repo"/docs/*.md "$root/usr/share/doc/$PKG/docs/"
fi
cat >"$root/usr/share/doc/$PKG/copyright" <<EOF
registry-supervisor $version, MIT License.
The bundled wheels in /usr/share/$PKG/wheels carry their own licenses in their metadata.
EOF

cat >"$root/DEBIAN/conffiles" <<EOF
/etc/$PKG/registry.env
EOF
# python3-minimal ships this file: its upgrades (a new Python after a distribution
# upgrade) run postinst "triggered", which remakes the venv when it stopped working.
cat >"$root/DEBIAN/triggers" <<EOF
interest-noawait /usr/share/python3/debian_defaults
EOF

max_py=$(tr ' ' '\n' <<<"$PY_TARGETS" | sort -V | tail -n 1)
lowest_py=$(tr ' ' '\n' <<<"$PY_TARGETS" | sort -V | head -n 1)
next_py="${max_py%%.*}.$((${max_py#*.} + 1))"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $deb_version
Architecture: $arch
Maintainer: registry-supervisor developers <root@localhost>
Installed-Size: $installed_kb
Depends: python3 (>= $lowest_py), python3 (<< $next_py), python3-venv, procps, libc6 (>= $GLIBC_BASELINE)
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

for script in postinst prerm postrm; do
    sed "s/@VERSION@/$version/g" "$here/debian/$script" >"$root/DEBIAN/$script"
    chmod 0755 "$root/DEBIAN/$script"
done

mkdir -p "$out"
deb=$out/${PKG}_${deb_version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
