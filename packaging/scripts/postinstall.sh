#!/bin/sh
# postinstall: deb postinst (configure [OLD-VERSION] | abort-*), rpm %post
# (1 = first install, 2+ = upgrade).
# First install: enable the unit; start it when the config names a server.
# Upgrade: reload systemd and restart the service if it was running (an
# operator's stop or disable is kept).
set -e
PKG=@PACKAGE@
@COMMON@

case "$1" in
  configure) if [ -z "$2" ]; then action=install; else action=upgrade; fi ;;
  abort-upgrade | abort-remove | abort-deconfigure) action=upgrade ;;
  1) action=install ;;
  [0-9]*) action=upgrade ;;
  *) exit 0 ;;
esac

if systemd_running; then
  systemctl daemon-reload || true
fi
if [ "$action" = install ] && have_systemctl; then
  # Works without a running systemd too (offline: it only writes symlinks),
  # so an image built with the package boots with the agent enabled.
  systemctl enable "$UNIT" >/dev/null 2>&1 || say "could not enable $UNIT"
fi
if ! systemd_running; then
  [ "$action" = install ] && say "systemd is not running here: $UNIT not started"
  exit 0
fi
if [ "$action" = upgrade ]; then
  systemctl try-restart "$UNIT" || say "restart of $UNIT failed: see journalctl -u $UNIT"
  exit 0
fi
if configured; then
  systemctl start "$UNIT" || say "$UNIT failed to start: see journalctl -u $UNIT"
else
  say "$UNIT enabled but not started: $why_not. Edit it, then: systemctl start $UNIT"
fi
exit 0
