// Package systemd holds the agent's service unit (tether-agent.service) and
// its example config (agent.example.yaml), which `make install` copies into
// place. Its test runs `systemd-analyze verify` on the unit and checks the
// directives the agent relies on (Type=notify, the watchdog, Restart=always).
// There is no Go code to import here.
package systemd
