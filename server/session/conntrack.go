package session

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Conn observes one transport connection so that a session's end can be
// attributed precisely: did the peer close it (FIN/RST), or did this server
// close it (HTTP/2 keepalive enforcement, shutdown)? grpc-go cancels a
// stream's context in both cases with the same status, so the connection
// itself is the only place that knows.
type Conn struct {
	net.Conn
	lastRead   atomic.Int64 // unix nanos of the last read that returned bytes
	peerClosed atomic.Bool  // a read saw EOF or a reset
	closedByUs atomic.Bool  // Close was called on this side
}

// Read records activity and whether the peer closed the connection.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
	}
	if err != nil && !c.closedByUs.Load() && isPeerClose(err) {
		c.peerClosed.Store(true)
	}
	return n, err
}

// Close records that this side closed the connection.
func (c *Conn) Close() error {
	c.closedByUs.Store(true)
	return c.Conn.Close()
}

// LastRead is the time bytes last arrived on the connection.
func (c *Conn) LastRead() time.Time { return time.Unix(0, c.lastRead.Load()) }

// PeerClosed reports whether the peer closed or reset the connection.
func (c *Conn) PeerClosed() bool { return c.peerClosed.Load() }

// ClosedByUs reports whether this side closed the connection before the peer
// did.
func (c *Conn) ClosedByUs() bool { return c.closedByUs.Load() && !c.peerClosed.Load() }

func isPeerClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ConnInfo is the credentials.AuthInfo of a tracked connection: the inner
// credentials' AuthInfo (e.g. TLS) plus the Conn.
type ConnInfo struct {
	credentials.AuthInfo
	Conn *Conn
}

// GetCommonAuthInfo lets grpc-go read the inner security level.
func (i ConnInfo) GetCommonAuthInfo() credentials.CommonAuthInfo {
	if c, ok := i.AuthInfo.(interface {
		GetCommonAuthInfo() credentials.CommonAuthInfo
	}); ok {
		return c.GetCommonAuthInfo()
	}
	return credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}
}

// Unwrap returns the inner credentials' AuthInfo (credentials.TLSInfo with TLS).
func (i ConnInfo) Unwrap() credentials.AuthInfo { return i.AuthInfo }

// TrackConns wraps server transport credentials — any: insecure in dev mode,
// credentials.NewTLS otherwise — so that every accepted connection is a
// *Conn, reachable from a stream's context with ConnFrom, while the inner
// AuthInfo (credentials.TLSInfo) stays reachable through ConnInfo.
func TrackConns(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return &tracking{inner: inner}
}

type tracking struct {
	inner credentials.TransportCredentials
}

func (t *tracking) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c := &Conn{Conn: raw}
	c.lastRead.Store(time.Now().UnixNano())
	conn, info, err := t.inner.ServerHandshake(c)
	if err != nil {
		return nil, nil, err
	}
	return conn, ConnInfo{AuthInfo: info, Conn: c}, nil
}

func (t *tracking) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return t.inner.ClientHandshake(ctx, authority, raw)
}

func (t *tracking) Info() credentials.ProtocolInfo { return t.inner.Info() }

func (t *tracking) Clone() credentials.TransportCredentials {
	return &tracking{inner: t.inner.Clone()}
}

func (t *tracking) OverrideServerName(name string) error {
	return t.inner.OverrideServerName(name) //nolint:staticcheck // required by the interface
}

// ConnFrom returns the tracked connection of a stream, or nil.
func ConnFrom(ctx context.Context) *Conn {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if ci, ok := p.AuthInfo.(ConnInfo); ok {
		return ci.Conn
	}
	return nil
}
