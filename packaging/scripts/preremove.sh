#!/bin/sh
# preremove: deb prerm (remove | upgrade | deconfigure | failed-upgrade),
# rpm %preun (0 = erase, 1+ = upgrade).
# Removal stops the service; an upgrade leaves it running (the new
# package's postinstall restarts it).
set -e
PKG=@PACKAGE@
@COMMON@

case "$1" in
  remove | deconfigure | 0) ;;
  *) exit 0 ;;
esac
if systemd_running; then
  systemctl stop "$UNIT" || true
fi
if [ "$1" = 0 ] && have_systemctl; then
  # rpm has no purge: erase is the end, as in its %systemd_preun.
  systemctl --no-reload disable "$UNIT" >/dev/null 2>&1 || true
fi
exit 0
