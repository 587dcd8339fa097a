#!/bin/sh
# dist.sh OUTDIR: every release artifact of this commit, into OUTDIR (emptied
# first):
#   tether-agent    linux amd64, arm64, armv7, armv6 (Raspberry Pi Zero/1)
#   tether-server   linux amd64, arm64
#   tether-gateway  linux amd64, arm64
# For each: the binary (BINARY_VERSION_linux_ARCH), a tarball with the binary,
# its systemd unit, its example config and docs/INSTALL.md
# (BINARY_VERSION_linux_ARCH.tar.gz), a .deb and an .rpm (package.sh); then
# SHA256SUMS over all of them. Same commit + same Go toolchain = same bytes:
# mtimes come from the commit time, tar and gzip drop owners and timestamps.
# Environment: VERSION, COMMIT, SOURCE_DATE_EPOCH (default: from git), GO,
# ARCHS (limit the architectures, e.g. ARCHS=amd64), PACKAGES=0 (skip deb/rpm),
# TARBALLS=0 (skip the tarballs).
set -eu
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
GO=${GO:-go}
VERSION=${VERSION:-$("$here/version.sh")}
COMMIT=${COMMIT:-$("$here/version.sh" --commit)}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$("$here/version.sh" --epoch)}
ARCHS=${ARCHS:-amd64 arm64 armv7 armv6}
PACKAGES=${PACKAGES:-1}
TARBALLS=${TARBALLS:-1}
export GO VERSION COMMIT SOURCE_DATE_EPOCH

out=$1
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

if [ "$PACKAGES" = 1 ]; then
  NFPM=$work/nfpm
  (cd "$repo" && "$GO" build -modfile=tools/go.mod -o "$NFPM" github.com/goreleaser/nfpm/v2/cmd/nfpm)
  export NFPM
fi

want() { for a in $ARCHS; do [ "$a" = "$1" ] && return 0; done; return 1; }

for bin in tether-agent tether-server tether-gateway; do
  case "$bin" in
    tether-agent) archs="amd64 arm64 armv7 armv6" dir=agent/systemd conf=agent.example.yaml ;;
    tether-server) archs="amd64 arm64" dir=server/systemd conf=server.example.env ;;
    tether-gateway) archs="amd64 arm64" dir=gateway/systemd conf=gateway.example.env ;;
  esac
  for arch in $archs; do
    want "$arch" || continue
    name=${bin}_${VERSION}_linux_${arch}
    echo "build $name" >&2
    "$here/build.sh" "$out/$name" "$bin" "$arch"

    if [ "$TARBALLS" = 1 ]; then
      t=$work/$name
      mkdir -p "$t"
      cp "$out/$name" "$t/$bin"
      cp "$repo/$dir/$bin.service" "$repo/$dir/$conf" "$repo/docs/INSTALL.md" "$t/"
      chmod 0755 "$t/$bin"
      chmod 0644 "$t/$bin.service" "$t/$conf" "$t/INSTALL.md"
      (cd "$work" && tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        --format=gnu -cf - "$name") | gzip -9 -n >"$out/$name.tar.gz"
    fi

    if [ "$PACKAGES" = 1 ]; then
      "$here/package.sh" "$out" "$bin" "$arch" "$out/$name" >/dev/null
    fi
  done
done

(cd "$out" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%f\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
echo "$out:" >&2
(cd "$out" && ls -l | sed 1d) >&2
