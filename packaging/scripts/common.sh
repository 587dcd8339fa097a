# Shared by the maintainer scripts of the tether-agent, tether-server and
# tether-gateway packages; packaging/package.sh pastes it into each script in
# place of the @COMMON@ line, after PKG=<package name>. POSIX sh: runs under
# dpkg (postinst/prerm/postrm) and rpm (%post/%preun/%postun).
#
# Nothing here may fail the package operation: without a running systemd
# (a container, a chroot, an image build) the unit is only enabled (symlinks,
# which systemctl writes offline), never started or stopped.
#
# TETHER_PKG_ROOT and TETHER_PKG_SYSTEMD_RUN exist for packaging's own test,
# which runs these scripts outside a package manager against a stub
# systemctl; they are empty/unset in a real install.
UNIT="$PKG.service"
ROOT="${TETHER_PKG_ROOT:-}"
SYSTEMD_RUN="${TETHER_PKG_SYSTEMD_RUN:-/run/systemd/system}"

have_systemctl() { command -v systemctl >/dev/null 2>&1; }
# systemd_running: PID 1 is systemd (sd_booted()'s own test).
systemd_running() { [ -d "$SYSTEMD_RUN" ] && have_systemctl; }

# value FILE KEY: the value of "KEY: v" (YAML) or "KEY=v" (env file) in FILE,
# quotes and trailing comments dropped; empty when absent or commented out.
value() {
  [ -r "$1" ] || return 0
  sed -n -e "s/^[[:space:]]*$2[[:space:]]*[:=][[:space:]]*//p" "$1" | tail -n 1 |
    sed -e 's/[[:space:]]#.*$//' -e 's/^["'\'']//' -e 's/["'\'']*[[:space:]]*$//'
}

# placeholder V: true when V is empty or still the example's value.
placeholder() {
  case "$1" in
    "" | *example.com* | *example.org* | *example.net*) return 0 ;;
  esac
  return 1
}

# configured: true when the config names what the service needs to be
# useful, so that installing a package with the shipped example config never
# starts a service that can only fail or dial a made-up host. why_not says
# what is missing.
why_not=""
configured() {
  case "$PKG" in
    tether-agent)
      s=$(value "$ROOT/etc/default/tether-agent" TETHER_SERVER)
      [ -n "$s" ] || s=$(value "$ROOT/etc/tether/agent.yaml" server)
      placeholder "$s" || return 0
      why_not="/etc/tether/agent.yaml names no server (server: ${s:-<none>})"
      ;;
    tether-gateway)
      s=$(value "$ROOT/etc/tether/gateway.env" TETHER_SERVER)
      placeholder "$s" || return 0
      why_not="/etc/tether/gateway.env names no server (TETHER_SERVER=${s:-<none>})"
      ;;
    tether-server)
      c=$(value "$ROOT/etc/tether/server.env" TETHER_TLS_CERT)
      if [ -z "$c" ] || [ -e "$ROOT$c" ]; then return 0; fi
      why_not="/etc/tether/server.env names the certificate $c, which does not exist (docs/SECURITY.md)"
      ;;
  esac
  return 1
}

say() { echo "$PKG: $*"; }
