#!/bin/sh
# package.sh OUTDIR BINARY ARCH BINPATH: the .deb and the .rpm of one binary
# for one architecture, built with nfpm (pinned in tools/go.mod, offline).
#   BINARY  tether-agent | tether-server | tether-gateway
#   ARCH    amd64 | arm64 | armv7 | armv6 (as in build.sh)
#   BINPATH the release binary (packaging/build.sh)
# Reads the unit and the example config from where they live in the tree
# (agent/systemd, server/systemd, gateway/systemd); the unit's /usr/local/bin
# becomes /usr/bin. Writes OUTDIR/BINARY_VERSION_ARCH.deb and
# OUTDIR/BINARY-VERSION-1.RPMARCH.rpm and prints their paths.
# Environment: VERSION (default: packaging/version.sh), SOURCE_DATE_EPOCH
# (default: the commit time; the files' mtimes in the packages), GO, NFPM.
#
# package.sh --scripts DIR BINARY only renders the maintainer scripts into
# DIR (postinstall.sh, preremove.sh, postremove.sh), for packaging's test.
set -eu
here=$(cd "$(dirname "$0")" && pwd)

# render_scripts DIR BINARY: PKG=@PACKAGE@ set, scripts/common.sh pasted in
# place of the @COMMON@ line.
render_scripts() {
  for s in postinstall preremove postremove; do
    sed -e "s/@PACKAGE@/$2/" -e "/^@COMMON@\$/{r $here/scripts/common.sh
d;}" "$here/scripts/$s.sh" >"$1/$s.sh"
    chmod 0755 "$1/$s.sh"
  done
}
if [ "${1:-}" = --scripts ] && [ $# -eq 3 ]; then
  mkdir -p "$2"
  render_scripts "$2" "$3"
  exit 0
fi

[ $# -eq 4 ] || { echo "usage: $0 OUTDIR BINARY ARCH BINPATH" >&2; exit 2; }
outdir=$1 bin=$2 arch=$3 binpath=$4
repo=$(dirname "$here")
GO=${GO:-go}
VERSION=${VERSION:-$("$here/version.sh")}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$("$here/version.sh" --epoch)}
export SOURCE_DATE_EPOCH

case "$bin" in
  tether-agent) unit=agent/systemd/tether-agent.service conf=agent/systemd/agent.example.yaml confname=agent.yaml ;;
  tether-server) unit=server/systemd/tether-server.service conf=server/systemd/server.example.env confname=server.env ;;
  tether-gateway) unit=gateway/systemd/tether-gateway.service conf=gateway/systemd/gateway.example.env confname=gateway.env ;;
  *) echo "package.sh: unknown binary $bin" >&2; exit 2 ;;
esac
case "$arch" in
  amd64) nfpm_arch=amd64 rpm_arch=x86_64 ;;
  arm64) nfpm_arch=arm64 rpm_arch=aarch64 ;;
  armv7) nfpm_arch=arm7 rpm_arch=armv7hl ;; # deb: armhf
  armv6) nfpm_arch=arm6 rpm_arch=armv6hl ;; # deb: armhf too (Raspberry Pi OS on a Pi Zero/1)
  *) echo "package.sh: unknown arch $arch" >&2; exit 2 ;;
esac

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
case "$binpath" in /*) ;; *) binpath="$PWD/$binpath" ;; esac
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM

cp "$binpath" "$stage/$bin"
{
  echo "# Installed by the $bin package: change it with a drop-in (systemctl edit $bin)."
  sed 's|/usr/local/bin/|/usr/bin/|g' "$repo/$unit"
} >"$stage/$bin.service"
cp "$repo/$conf" "$stage/$confname"
render_scripts "$stage" "$bin"
cp "$here/nfpm/$bin.yaml" "$stage/nfpm.yaml"

deb="$outdir/${bin}_${VERSION}_${arch}.deb"
rpm="$outdir/${bin}-${VERSION}-1.${rpm_arch}.rpm"
# nfpm (the version tools/go.mod pins) runs in the staging directory: the
# config's relative paths point there. NFPM may name an nfpm built before
# (dist.sh builds it once for all packages).
if [ -z "${NFPM:-}" ]; then
  NFPM=$stage/nfpm
  (cd "$repo" && "$GO" build -modfile=tools/go.mod -o "$NFPM" github.com/goreleaser/nfpm/v2/cmd/nfpm)
fi
nfpm() { (cd "$stage" && PKG_VERSION=$VERSION NFPM_ARCH=$nfpm_arch "$NFPM" "$@"); }
nfpm package --config nfpm.yaml --packager deb --target "$deb" >/dev/null
nfpm package --config nfpm.yaml --packager rpm --target "$rpm" >/dev/null
echo "$deb"
echo "$rpm"
