package loadgen

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultMaxDials            = 256
	DefaultDialTimeout         = 10 * time.Second
	DefaultCommandsConcurrency = 64
	DefaultCommandTimeout      = 10 * time.Second
	DefaultBufferSize          = 8 << 10
	DefaultWindowSize          = 64 << 10
	DefaultShutdownTimeout     = 15 * time.Second

	// fdReserve is how many descriptors are kept for everything that is not
	// an agent connection (stdio, epoll, the commands connection, /proc
	// reads, ...).
	fdReserve = 100
	// maxSourceIPs caps a --source-ips range.
	maxSourceIPs = 1 << 16
	// maxIDLen and the id alphabet are the server's device id rules.
	maxIDLen = 64
)

// Config is one load generator run.
type Config struct {
	// Servers are the replicas' gRPC addresses (host:port); agent i starts
	// on Servers[i % len(Servers)].
	Servers []string
	// Devices is how many agents to simulate.
	Devices int
	// IDPrefix is prepended to the agent index to form device ids.
	IDPrefix string
	// Ramp is the connect rate in new agents per second; 0 starts them all
	// at once (still bounded by MaxDials).
	Ramp float64
	// MaxDials bounds the connection attempts in flight (from dial to
	// HelloAck), first connects and reconnects alike (default 256).
	MaxDials int
	// LegacyFraction of the agents (spread evenly over the indexes) neither
	// advertise CAPABILITY_PONG nor answer Pings.
	LegacyFraction float64
	// SourceIPs, when set, are bound round-robin as the local address of the
	// agents' connections; empty lets the kernel choose.
	SourceIPs []netip.Addr
	// Duration is how long to hold the sessions, counted from the start; 0
	// runs until the context passed to Run ends.
	Duration time.Duration
	// ReportEvery is the period of the progress lines written to Progress;
	// 0 writes none.
	ReportEvery time.Duration
	// Progress receives the periodic report lines (nil: discarded).
	Progress io.Writer
	// DialTimeout bounds one connection attempt: TCP connect, stream open,
	// Hello and HelloAck (default 10s).
	DialTimeout time.Duration
	// Reconnect re-dials sessions that ended (closed by the server, broken,
	// or failed to connect) after a short jittered backoff.
	Reconnect bool

	// CommandsRate is the SendCommand "echo" rate per second; 0 disables
	// the command driver.
	CommandsRate float64
	// CommandsVia is the DeviceService address (default Servers[0]).
	CommandsVia string
	// CommandsWarmup is how long after the command drive starts results
	// begin to count (they are sent, but neither their latency nor their
	// outcome is recorded).
	CommandsWarmup time.Duration
	// CommandsHTTP, if set, sends the commands through the JSON gateway at
	// this base URL (http://host:port) instead of gRPC.
	CommandsHTTP string
	// CommandsConcurrency bounds the SendCommand calls in flight (default
	// 64); a call due while all slots are busy is skipped and counted.
	CommandsConcurrency int
	// CommandTimeout bounds one SendCommand call and is passed as its
	// timeout (default 10s).
	CommandTimeout time.Duration

	// ReadBufferSize and WriteBufferSize are each connection's transport
	// buffers (default 8 KiB; negative disables the buffer).
	ReadBufferSize, WriteBufferSize int
	// WindowSize is the static HTTP/2 stream and connection flow-control
	// window (default and minimum 64 KiB).
	WindowSize int32
	// ShutdownTimeout bounds the wait for every agent to close (default 15s).
	ShutdownTimeout time.Duration
	// AgentVersion is sent in Hello (default "loadgen").
	AgentVersion string
}

func (c *Config) setDefaults() {
	if c.MaxDials <= 0 {
		c.MaxDials = DefaultMaxDials
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.CommandsConcurrency <= 0 {
		c.CommandsConcurrency = DefaultCommandsConcurrency
	}
	if c.CommandTimeout <= 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.ReadBufferSize == 0 {
		c.ReadBufferSize = DefaultBufferSize
	}
	if c.WriteBufferSize == 0 {
		c.WriteBufferSize = DefaultBufferSize
	}
	if c.WindowSize < DefaultWindowSize {
		c.WindowSize = DefaultWindowSize
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.AgentVersion == "" {
		c.AgentVersion = "loadgen"
	}
	if c.CommandsVia == "" && len(c.Servers) > 0 {
		c.CommandsVia = c.Servers[0]
	}
}

// validate checks c after setDefaults.
func (c *Config) validate() error {
	if len(c.Servers) == 0 {
		return errors.New("no server address")
	}
	for _, s := range c.Servers {
		if err := checkHostPort(s); err != nil {
			return fmt.Errorf("server %q: %w", s, err)
		}
	}
	if c.Devices < 1 {
		return fmt.Errorf("devices %d: want at least 1", c.Devices)
	}
	if err := checkID(c.IDPrefix + strconv.Itoa(c.Devices-1)); err != nil {
		return fmt.Errorf("id prefix %q: %w", c.IDPrefix, err)
	}
	if !(c.LegacyFraction >= 0 && c.LegacyFraction <= 1) {
		return fmt.Errorf("legacy fraction %v: want 0..1", c.LegacyFraction)
	}
	if !(c.Ramp >= 0) || math.IsInf(c.Ramp, 0) {
		return fmt.Errorf("ramp %v: want a rate >= 0", c.Ramp)
	}
	if !(c.CommandsRate >= 0) || math.IsInf(c.CommandsRate, 0) {
		return fmt.Errorf("commands rate %v: want a rate >= 0", c.CommandsRate)
	}
	if c.CommandsRate > 0 {
		if err := checkHostPort(c.CommandsVia); err != nil {
			return fmt.Errorf("commands via %q: %w", c.CommandsVia, err)
		}
	}
	if c.Duration < 0 {
		return fmt.Errorf("duration %v: want >= 0", c.Duration)
	}
	for _, ip := range c.SourceIPs {
		if !ip.IsValid() {
			return errors.New("invalid source ip")
		}
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// checkID applies the server's device id rule: 1-64 of [A-Za-z0-9._-].
func checkID(id string) error {
	if len(id) == 0 || len(id) > maxIDLen {
		return fmt.Errorf("device id %q: want 1-%d characters", id, maxIDLen)
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("device id %q: only [A-Za-z0-9._-] allowed", id)
		}
	}
	return nil
}

// ParseRate parses a rate per second: "500", "500/s" or "0.5/s". Zero is
// allowed (it means unpaced or disabled, depending on the flag).
func ParseRate(s string) (float64, error) {
	v := strings.TrimSpace(s)
	v = strings.TrimSuffix(v, "/s")
	if v == "" {
		return 0, nil
	}
	r, err := strconv.ParseFloat(v, 64)
	if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
		return 0, fmt.Errorf("rate %q: want a number per second such as 500/s", s)
	}
	return r, nil
}

// ParseServers splits a comma-separated list of host:port addresses.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if err := checkHostPort(p); err != nil {
			return nil, fmt.Errorf("server %q: %w", p, err)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("no server address")
	}
	return out, nil
}

// ParseSourceIPs parses the --source-ips value:
//   - "" or "0": none (the kernel picks the source address);
//   - a count N: the N loopback addresses from 127.0.0.2 upwards
//     (127.0.0.2 ... 127.0.0.N+1, continuing into 127.0.1.x past .255);
//   - a range "127.0.0.2-127.0.0.50" (IPv4, inclusive);
//   - a comma-separated list of addresses and ranges.
//
// Every address of 127.0.0.0/8 is local on Linux, so loopback source
// addresses need no configuration. At most 65536 addresses.
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 || n > maxSourceIPs {
			return nil, fmt.Errorf("source ips %q: count must be 0..%d", s, maxSourceIPs)
		}
		return ipRange(netip.AddrFrom4([4]byte{127, 0, 0, 2}), n)
	}
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("source ips %q: %w", part, err)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, fmt.Errorf("source ips %q: %w", part, err)
		}
		if !a.Is4() || !b.Is4() || b.Less(a) {
			return nil, fmt.Errorf("source ips %q: want an ascending IPv4 range", part)
		}
		n := int(ip4(b)-ip4(a)) + 1
		if len(out)+n > maxSourceIPs {
			return nil, fmt.Errorf("source ips %q: more than %d addresses", s, maxSourceIPs)
		}
		r, err := ipRange(a, n)
		if err != nil {
			return nil, err
		}
		out = append(out, r...)
	}
	if len(out) > maxSourceIPs {
		return nil, fmt.Errorf("source ips %q: more than %d addresses", s, maxSourceIPs)
	}
	return out, nil
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func ipRange(first netip.Addr, n int) ([]netip.Addr, error) {
	start := uint64(ip4(first))
	if start+uint64(n) > 1<<32 {
		return nil, fmt.Errorf("source ip range from %s overflows", first)
	}
	out := make([]netip.Addr, n)
	for i := range out {
		v := uint32(start + uint64(i))
		out[i] = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return out, nil
}

// isLegacy spreads a fraction f of n agents evenly over the indexes: agent i
// is legacy when floor((i+1)·f) > floor(i·f), which makes exactly floor(n·f)
// of them legacy.
func isLegacy(i int, f float64) bool {
	if f <= 0 {
		return false
	}
	if f >= 1 {
		return true
	}
	return math.Floor(float64(i+1)*f+1e-9) > math.Floor(float64(i)*f+1e-9)
}
