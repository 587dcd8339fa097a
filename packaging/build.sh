#!/bin/sh
# build.sh OUT BINARY ARCH: one release binary.
#   BINARY  tether-agent | tether-server | tether-gateway
#   ARCH    amd64 | arm64 | armv7 | armv6
# Release flags: static (CGO_ENABLED=0), -trimpath, -buildvcs=false (the
# commit comes from the stamp below, so a tarball without .git builds the
# same bytes), stripped (-s -w), version and commit stamped into
# internal/version. Two runs on one commit with one Go toolchain give
# identical bytes (packaging/package_test.go checks it).
# Environment: VERSION, COMMIT (default: packaging/version.sh), GO (default go).
set -eu
[ $# -eq 3 ] || { echo "usage: $0 OUT BINARY ARCH" >&2; exit 2; }
out=$1 bin=$2 arch=$3
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
GO=${GO:-go}
VERSION=${VERSION:-$("$here/version.sh")}
COMMIT=${COMMIT:-$("$here/version.sh" --commit)}
case "$bin" in
  tether-agent|tether-server|tether-gateway) ;;
  *) echo "build.sh: unknown binary $bin" >&2; exit 2 ;;
esac
goarm=""
case "$arch" in
  amd64|arm64) goarch=$arch ;;
  armv7) goarch=arm goarm=7 ;;
  armv6) goarch=arm goarm=6 ;;
  *) echo "build.sh: unknown arch $arch (amd64, arm64, armv7, armv6)" >&2; exit 2 ;;
esac
pkg=github.com/tetherhq/tether/internal/version
mkdir -p "$(dirname "$out")"
cd "$repo"
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm GOFLAGS= \
  "$GO" build -trimpath -buildvcs=false \
  -ldflags "-s -w -buildid= -X $pkg.Version=$VERSION -X $pkg.Commit=$COMMIT" \
  -o "$out" "./cmd/$bin"
