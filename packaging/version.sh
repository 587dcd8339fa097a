#!/bin/sh
# Prints the release version of this checkout, usable as a Debian and an RPM
# package version and stamped into the binaries (internal/version.Version):
#   tag v1.2.3 on HEAD          -> 1.2.3
#   4 commits after v1.2.3      -> 1.2.3+git4.b9fa0e6abcde
#   no v* tag                   -> 0.0.0+git20261201213700.b9fa0e6abcde (commit time, UTC)
#   uncommitted changes         -> any of the above + ".dirty"
# With --commit it prints the full commit ("-dirty" appended when modified),
# with --epoch the commit time in seconds (SOURCE_DATE_EPOCH for tarballs and
# packages, so that two runs on one commit give the same bytes).
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  # A source tarball without .git: the caller must say (VERSION=..., COMMIT=...).
  case "${1:-}" in
    --commit) echo unknown ;;
    --epoch) echo 0 ;;
    *) echo 0.0.0+unknown ;;
  esac
  exit 0
fi
dirty=""
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || dirty=1
case "${1:-}" in
  --commit) echo "$(git rev-parse HEAD)${dirty:+-dirty}"; exit 0 ;;
  --epoch) git log -1 --format=%ct HEAD; exit 0 ;;
esac
hash=$(git rev-parse --short=12 HEAD)
if d=$(git describe --tags --match 'v[0-9]*' --long HEAD 2>/dev/null); then
  # v1.2.3-4-gabcdef...: tag, commits since, hash
  tag=${d%-*-g*}; rest=${d#"$tag"-}; n=${rest%%-*}
  v=${tag#v}
  [ "$n" = 0 ] || v="$v+git$n.$hash"
else
  v="0.0.0+git$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd HEAD).$hash"
fi
echo "$v${dirty:+.dirty}"
