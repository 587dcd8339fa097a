package envflag

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Known lists the flags of every Tether binary (tether-server,
// tether-agent, tether-gateway). A TETHER_* variable naming one of them is
// tolerated by a binary that lacks the flag, so that one environment (a
// container, `make run`, a shell) can configure several binaries; a
// variable that matches no binary's flag is a typo. Each command's tests
// check that its flags are listed here.
var Known = []string{
	// tether-server
	"listen", "http", "metrics", "advertise", "redis", "node", "ping-interval", "ping-timeout",
	"hello-timeout", "lease-ttl", "mirror-interval", "drain-timeout", "command-output-cap",
	"max-inflight-commands", "device-retention", "never-connected-retention", "history-retention", "history-length", "tls-cert", "tls-key", "client-ca", "peer-ca",
	"token-secret-file", "api-keys-file", "api-keys", "cluster-secret-file", "insecure",
	"hello-rate", "hello-burst", "hello-rate-loopback", "flap-limit", "flap-cooldown",
	"proxy-protocol-from", "store-timeout", "reconcile-interval", "max-pending-hellos", "shed-sched-latency",
	"shed-retry-after", "cert-cn-device", "peer-nodes", "pprof", "audit-stream-retention",
	"http-idle-timeout", "http-max-body", "http-watch-write-timeout", "http-max-header-bytes", "http-read-header-timeout",
	"idle-conn-timeout", "max-conns-per-ip", "max-header-list-size", "max-page-bytes", "max-snapshot-reads",
	"max-streams-per-conn", "max-watchers", "max-watchers-per-key", "redis-pool-block", "redis-pool-lease",
	"redis-pool-read", "watch-buffer", "watch-send-timeout", "max-jobs", "max-job-devices", "job-retention", "job-lease-ttl",
	"gc-percent", "log-format", "log-level", "version",
	// tether-agent
	"server", "config", "device-id", "legacy-no-pong", "ca", "tls", "server-name", "token-file",
	// tether-gateway
	"cors-origins", "max-body", "server-ca", "idle-timeout", "max-body-reads", "max-header-bytes",
	"max-watches", "read-header-timeout", "require-auth", "watch-conns", "watch-write-timeout",
	// subcommands (token, apikey, tls)
	"ttl", "until", "role", "name", "dir", "days", "dns", "ip", "ca-key",
}

// ignoredPrefixes are TETHER_* variables that are not flags of the
// daemons: the load generator's own prefix and the test harnesses'.
var ignoredPrefixes = []string{"LOADGEN_", "FAULTS", "ARTIFACTS", "E2E"}

// CheckEnv reports the first variable in the process environment that
// starts with prefix_ but names neither a flag of fs nor one in Known, with
// the closest flag's variable as a suggestion:
// `unknown environment variable TETHER_LISTN (did you mean TETHER_LISTEN?)`.
func CheckEnv(fs *flag.FlagSet, prefix string) error {
	return checkEnv(fs, prefix, os.Environ())
}

func checkEnv(fs *flag.FlagSet, prefix string, environ []string) error {
	p := strings.TrimSuffix(prefix, "_") + "_"
	valid := map[string]bool{}
	var own []string
	fs.VisitAll(func(f *flag.Flag) {
		valid[EnvName(prefix, f.Name)] = true
		own = append(own, EnvName(prefix, f.Name))
	})
	for _, n := range Known {
		valid[EnvName(prefix, n)] = true
	}
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		rest, ok := strings.CutPrefix(k, p)
		if !ok || valid[k] || ignored(rest) {
			continue
		}
		unknown = append(unknown, k)
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	k := unknown[0]
	if c := closest(k, own); c != "" {
		return fmt.Errorf("unknown environment variable %s (did you mean %s? unset it or see --help)", k, c)
	}
	return fmt.Errorf("unknown environment variable %s: no flag of this program reads it (unset it or see --help)", k)
}

func ignored(rest string) bool {
	for _, ip := range ignoredPrefixes {
		if strings.HasPrefix(rest, ip) {
			return true
		}
	}
	return false
}

// closest returns the candidate nearest to s by edit distance, if it is near
// enough to be a plausible typo (at most a third of its length, at least 2).
func closest(s string, candidates []string) string {
	best, bestD := "", max(2, len(s)/3)+1
	for _, c := range candidates {
		if d := distance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Positive checks that each named duration flag of fs is above zero, where
// zero or a negative value makes no sense (an interval, a timeout, a TTL):
// `--ping-interval 0s: must be positive (e.g. 10s)`. It names the variable
// instead when the value came from the environment.
func Positive(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil {
			return fmt.Errorf("envflag.Positive: no flag %q", n)
		}
		g, ok := f.Value.(flag.Getter)
		if !ok {
			continue
		}
		d, ok := g.Get().(time.Duration)
		if !ok || d > 0 {
			continue
		}
		return fmt.Errorf("%s: must be positive (e.g. %s)", Source(fs, n), f.DefValue)
	}
	return nil
}

// Source names where flag n's value came from, for error messages:
// `TETHER_PING_INTERVAL=0` when Parse took it from the environment,
// otherwise `--ping-interval 0s`.
func Source(fs *flag.FlagSet, n string) string {
	f := fs.Lookup(n)
	if f == nil {
		return "--" + n
	}
	if w, ok := f.Value.(*value); ok && w.env != "" {
		return w.env
	}
	return "--" + n + " " + f.Value.String()
}

// HostPort checks that each named string flag of fs is empty or a
// host:port listen address with a numeric port (the host may be empty:
// ":7070" listens on every interface):
// `--metrics 127.0.0.1: missing port (e.g. 127.0.0.1:7075)`.
func HostPort(fs *flag.FlagSet, names ...string) error {
	for _, n := range names {
		f := fs.Lookup(n)
		if f == nil {
			return fmt.Errorf("envflag.HostPort: no flag %q", n)
		}
		v := f.Value.String()
		if v == "" {
			continue
		}
		if err := checkHostPort(v); err != nil {
			return fmt.Errorf("%s: %s", Source(fs, n), err)
		}
	}
	return nil
}

func checkHostPort(v string) error {
	if strings.Contains(v, "://") {
		return fmt.Errorf("want host:port, not a URL (e.g. 127.0.0.1:7070)")
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		if !strings.Contains(v, ":") {
			return fmt.Errorf("missing port (e.g. %s:7070)", v)
		}
		return fmt.Errorf("want host:port (an IPv6 address goes in brackets: [::1]:7070)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
