package proxyproto

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultHeaderTimeout bounds how long a trusted connection may take to
// send its header.
const DefaultHeaderTimeout = 5 * time.Second

// ParsePrefixes parses a comma-separated list of CIDRs or single addresses
// (the --proxy-protocol-from flag).
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !strings.Contains(p, "/") {
			a, err := netip.ParseAddr(p)
			if err != nil {
				return nil, fmt.Errorf("%q is neither a CIDR (10.0.0.0/8) nor an address", p)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		pr, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8", p)
		}
		out = append(out, pr.Masked())
	}
	return out, nil
}

// Listener wraps a TCP listener: a connection from a Trusted source that
// starts with a PROXY protocol v2 header has the client the header names as
// its RemoteAddr; one from a trusted source without a header keeps its TCP
// peer address (the in-process gateway and other replicas dial the
// listener directly, and may share the balancers' network); a malformed or
// version 1 header closes the connection. Connections from anywhere else
// are returned untouched: their bytes are never read as a header, so a
// client cannot forge its address. The header is read lazily, by the
// first Read or RemoteAddr of the connection, so that Accept never waits
// on a client.
type Listener struct {
	net.Listener
	// Trusted are the networks the balancers connect from.
	Trusted []netip.Prefix
	// HeaderTimeout bounds reading the header (default 5s).
	HeaderTimeout time.Duration
	// Logger receives one line per refused header (default slog.Default()).
	Logger *slog.Logger
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if !l.trusted(c.RemoteAddr()) {
		return c, nil
	}
	timeout := l.HeaderTimeout
	if timeout <= 0 {
		timeout = DefaultHeaderTimeout
	}
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	return &conn{Conn: c, r: bufio.NewReaderSize(c, 256), timeout: timeout, log: log}, nil
}

func (l *Listener) trusted(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	for _, p := range l.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// conn is a connection from a trusted source.
type conn struct {
	net.Conn
	r       *bufio.Reader
	timeout time.Duration
	log     *slog.Logger

	once   sync.Once
	remote net.Addr // the client the header named, or the TCP peer (LOCAL)
	err    error    // a bad or missing header: every Read fails with it

	mu       sync.Mutex
	deadline time.Time // the read deadline the user set (restored after the header)
}

// SetDeadline records the read deadline, so that reading the header does
// not lose it (gRPC bounds its handshake with one).
func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline records the read deadline.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) readHeader() {
	c.once.Do(func() {
		c.remote = c.Conn.RemoteAddr()
		c.mu.Lock()
		user := c.deadline
		c.mu.Unlock()
		d := time.Now().Add(c.timeout)
		if !user.IsZero() && user.Before(d) {
			d = user
		}
		_ = c.Conn.SetReadDeadline(d)
		var h Header
		var err error
		if c.hasSignature() {
			h, err = Read(c.r)
		}
		c.mu.Lock()
		_ = c.Conn.SetReadDeadline(c.deadline)
		c.mu.Unlock()
		if err != nil {
			c.err = err
			c.log.Warn("proxy protocol header refused; closing the connection", "balancer", c.Conn.RemoteAddr().String(), "err", err)
			c.Conn.Close()
			return
		}
		if !h.Local && h.Source.IsValid() {
			c.remote = tcpAddr(h.Source)
		}
	})
}

// hasSignature peeks at the first bytes: true when they are (or, cut short
// by the timeout or the end of the stream, begin) a version 2 signature or a
// version 1 "PROXY " line, which Read then parses or refuses.
func (c *conn) hasSignature() bool {
	b, _ := c.r.Peek(len(Signature))
	if len(b) == 0 {
		return false
	}
	return bytes.HasPrefix(Signature, b) || bytes.HasPrefix(b, []byte("PROXY ")) ||
		bytes.HasPrefix([]byte("PROXY "), b)
}

// Read reads after the header.
func (c *conn) Read(b []byte) (int, error) {
	c.readHeader()
	if c.err != nil {
		return 0, c.err
	}
	return c.r.Read(b)
}

// RemoteAddr is the client the header named.
func (c *conn) RemoteAddr() net.Addr {
	c.readHeader()
	return c.remote
}
