package server

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tetherhq/tether/server/registry/redisstore"
)

// Defaults of Limits.
const (
	DefaultMaxHeaderListSize     = 16 << 10
	DefaultIdleConnTimeout       = time.Minute
	DefaultMaxStreamsPerConn     = 32
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPIdleTimeout       = 2 * time.Minute
	DefaultHTTPMaxHeaderBytes    = 64 << 10
)

// Limits bounds what callers (operators and anonymous clients alike) can make
// a replica hold. Zero values mean the defaults; see docs/SECURITY.md.
type Limits struct {
	// MaxWatchers and MaxWatchersPerKey cap the open WatchDevices streams
	// of the replica and of one API key (deviceapi defaults).
	MaxWatchers, MaxWatchersPerKey int
	// WatchBuffer is how many events one watcher may fall behind the
	// replica's event feed before it is ended (it resumes from its last
	// event).
	WatchBuffer int
	// WatchSendTimeout bounds one Send of a gRPC WatchDevices stream: a
	// client that reads nothing for this long has its watch ended
	// (deviceapi default 30s).
	WatchSendTimeout time.Duration
	// MaxSnapshotReads bounds the store reads of watch snapshots and
	// catch-ups running at once.
	MaxSnapshotReads int
	// MaxPageBytes bounds one ListDevices page's encoded size.
	MaxPageBytes int
	// RedisPools sizes the Redis store's connection pools (lease writes,
	// API reads, blocking event reads).
	RedisPools redisstore.PoolSizes

	// MaxHeaderListSize bounds the header list of one gRPC request (checked
	// before authentication). Default 16 KiB.
	MaxHeaderListSize uint32
	// IdleConnTimeout closes (GOAWAY) a gRPC connection that has had no
	// open stream for this long (keepalive MaxConnectionIdle). Agents always
	// hold their stream, so it never touches them. Default 1m; negative =
	// never.
	IdleConnTimeout time.Duration
	// MaxStreamsPerConn is the gRPC server's MaxConcurrentStreams per
	// connection. Default 32.
	MaxStreamsPerConn uint32
	// MaxConnsPerIP caps the open connections from one source IP on the
	// gRPC listener and the --http listener; 0 = no cap.
	MaxConnsPerIP int

	// HTTPReadHeaderTimeout, HTTPIdleTimeout and HTTPMaxHeaderBytes
	// configure the --http server. Defaults 10s, 2m, 64 KiB.
	HTTPReadHeaderTimeout time.Duration
	HTTPIdleTimeout       time.Duration
	HTTPMaxHeaderBytes    int
}

func (l *Limits) setDefaults() {
	if l.MaxHeaderListSize == 0 {
		l.MaxHeaderListSize = DefaultMaxHeaderListSize
	}
	if l.IdleConnTimeout == 0 {
		l.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if l.MaxStreamsPerConn == 0 {
		l.MaxStreamsPerConn = DefaultMaxStreamsPerConn
	}
	if l.HTTPReadHeaderTimeout <= 0 {
		l.HTTPReadHeaderTimeout = DefaultHTTPReadHeaderTimeout
	}
	if l.HTTPIdleTimeout <= 0 {
		l.HTTPIdleTimeout = DefaultHTTPIdleTimeout
	}
	if l.HTTPMaxHeaderBytes <= 0 {
		l.HTTPMaxHeaderBytes = DefaultHTTPMaxHeaderBytes
	}
}

// perIPListener refuses (accepts and closes at once) a connection from a
// source IP that already holds max open connections.
type perIPListener struct {
	net.Listener
	max     int
	refused prometheus.Counter

	mu   sync.Mutex
	open map[string]int
}

// limitPerIP wraps l; max <= 0 returns l unchanged.
func limitPerIP(l net.Listener, max int, refused prometheus.Counter) net.Listener {
	if max <= 0 {
		return l
	}
	return &perIPListener{Listener: l, max: max, refused: refused, open: map[string]int{}}
}

func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		if l.open[ip] >= l.max {
			l.mu.Unlock()
			l.refused.Inc()
			_ = c.Close()
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *perIPListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[ip]--; l.open[ip] <= 0 {
		delete(l.open, ip)
	}
}

func remoteIP(c net.Conn) string {
	a := c.RemoteAddr()
	if a == nil {
		return ""
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// countedConn releases its per-IP slot once, on the first Close.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// SyscallConn exposes the socket (the in-process gateway writes watch events
// to it without blocking); it fails for a connection that is not a socket.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
