#!/bin/sh
# postremove: deb postrm (remove | purge | upgrade | ...), rpm %postun
# (0 = erase, 1+ = upgrade).
# Removal reloads systemd. Purge (deb) also removes the unit's enable links
# and the service's state directory; dpkg itself deletes the config file.
set -e
PKG=@PACKAGE@
@COMMON@

case "$1" in
  remove | purge | 0) ;;
  *) exit 0 ;;
esac
if [ "$1" = purge ]; then
  find "$ROOT/etc/systemd/system" -name "$UNIT" -type l -exec rm -f {} + 2>/dev/null || true
  rm -rf "$ROOT/var/lib/$PKG" "$ROOT/var/lib/private/$PKG"
  rmdir "$ROOT/etc/tether" 2>/dev/null || true
fi
if systemd_running; then
  systemctl daemon-reload || true
fi
exit 0
