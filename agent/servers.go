package agent

import "github.com/tetherhq/tether/internal/target"

// ParseServers splits a comma-separated list of server addresses (the
// --server flag, TETHER_SERVER, server: in the config file) and checks each
// one (internal/target), so that a mistake stops the agent at start with
// one line instead of failing at every reconnect.
func ParseServers(s string) ([]string, error) { return target.Parse(s) }
