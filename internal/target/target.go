package target

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Parse splits a comma-separated list of server addresses (the
// --server flag, TETHER_SERVER, server: in the config file) and checks each
// one, so that a mistake stops the agent at start with one line instead of
// failing at every reconnect. An address is host:port ([v6]:port), or a
// grpc-go target: dns:///host:port (re-resolved at every connection
// attempt; all the addresses a name has are tried), unix:///path or
// passthrough:///anything.
func Parse(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if err := Check(a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no server address in %q (want host:port, e.g. 127.0.0.1:7070)", s)
	}
	return out, nil
}

// Check reports what is wrong with one server address, or nil.
func Check(a string) error {
	scheme, rest, hasScheme := strings.Cut(a, "://")
	if !hasScheme {
		// "unix:relative/path" and "unix-abstract:name" are grpc-go targets too.
		if strings.HasPrefix(a, "unix:") || strings.HasPrefix(a, "unix-abstract:") {
			return nil
		}
		return checkHostPort(a, a)
	}
	switch scheme {
	case "http", "https", "grpc", "grpcs", "tcp":
		return fmt.Errorf("server address %q: give host:port without %s:// (TLS is turned on by flags, not by a URL scheme)", a, scheme)
	case "dns":
		// dns:///host:port or dns://resolver/host:port
		_, hp, ok := strings.Cut(rest, "/")
		if !ok {
			return fmt.Errorf("server address %q: want dns:///host:port", a)
		}
		return checkHostPort(a, hp)
	case "passthrough", "unix", "unix-abstract":
		// passthrough hands its string to the dialer unchanged (tests use
		// names without a port).
		return nil
	}
	return fmt.Errorf("server address %q: unknown scheme %q (want host:port or dns:///host:port)", a, scheme)
}

func checkHostPort(a, hp string) error {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		if strings.Count(hp, ":") == 0 || strings.HasSuffix(hp, "]") {
			return fmt.Errorf("server address %q: missing port (e.g. %s:7070)", a, hp)
		}
		return fmt.Errorf("server address %q: want host:port (an IPv6 address goes in brackets: [::1]:7070; several addresses are comma-separated)", a)
	}
	if host == "" {
		return fmt.Errorf("server address %q: missing host", a)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("server address %q: port %q is not a number from 1 to 65535", a, port)
	}
	return nil
}
