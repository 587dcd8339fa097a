// Package blackhole simulates power loss for tests: a connection (or a TCP
// proxy) that, once cut, stops moving bytes in both directions without
// closing either socket — no FIN, no RST, exactly what a device that lost
// power looks like to the server. A killed process on loopback is not a
// power loss (its kernel sends FIN/RST); this is.
package blackhole

import (
	"io"
	"net"
	"sync"
)

// Switch cuts every connection wrapped with it at once.
type Switch struct {
	once sync.Once
	cut  chan struct{}
}

// NewSwitch returns a switch that is not yet cut.
func NewSwitch() *Switch { return &Switch{cut: make(chan struct{})} }

// Cut stops all traffic on the wrapped connections, forever.
func (s *Switch) Cut() { s.once.Do(func() { close(s.cut) }) }

// IsCut reports whether Cut was called.
func (s *Switch) IsCut() bool {
	select {
	case <-s.cut:
		return true
	default:
		return false
	}
}

// Conn wraps c: after the switch is cut, reads block until the connection
// is closed locally, and writes are swallowed (they "succeed", as writes to
// a socket whose peer vanished do until the buffers fill).
func (s *Switch) Conn(c net.Conn) net.Conn {
	return &conn{Conn: c, sw: s, closed: make(chan struct{})}
}

type conn struct {
	net.Conn
	sw        *Switch
	closeOnce sync.Once
	closed    chan struct{}
}

type readResult struct {
	n   int
	err error
}

func (c *conn) Read(b []byte) (int, error) {
	if c.sw.IsCut() {
		<-c.closed
		return 0, net.ErrClosed
	}
	// Read into a private buffer so that bytes arriving after the cut are
	// dropped rather than delivered.
	buf := make([]byte, len(b))
	res := make(chan readResult, 1)
	go func() {
		n, err := c.Conn.Read(buf)
		res <- readResult{n, err}
	}()
	select {
	case r := <-res:
		if c.sw.IsCut() {
			<-c.closed
			return 0, net.ErrClosed
		}
		copy(b, buf[:r.n])
		return r.n, r.err
	case <-c.sw.cut:
		<-c.closed
		return 0, net.ErrClosed
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *conn) Write(b []byte) (int, error) {
	if c.sw.IsCut() {
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		default:
			return len(b), nil
		}
	}
	return c.Conn.Write(b)
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// Listener wraps every accepted connection with the switch.
func (s *Switch) Listener(l net.Listener) net.Listener { return &listener{Listener: l, sw: s} }

type listener struct {
	net.Listener
	sw *Switch
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.sw.Conn(c), nil
}

// Proxy is a TCP proxy on loopback for end-to-end tests with real binaries:
// each accepted connection is forwarded to Target until the proxy's switch
// is cut; then bytes stop flowing both ways and no socket is closed.
type Proxy struct {
	lis    net.Listener
	target string
	mu     sync.Mutex
	sw     *Switch
	conns  []net.Conn
}

// NewProxy listens on 127.0.0.1:0 and forwards to target.
func NewProxy(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{lis: l, target: target, sw: NewSwitch()}
	go p.serve()
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Cut blackholes every current connection. New connections accepted after
// Cut are forwarded normally (the device "rebooted" and came back).
func (p *Proxy) Cut() {
	p.mu.Lock()
	sw := p.sw
	p.sw = NewSwitch()
	p.mu.Unlock()
	sw.Cut()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	err := p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	return err
}

func (p *Proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		sw := p.sw
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		a, b := sw.Conn(c), sw.Conn(up)
		go pipe(a, b)
		go pipe(b, a)
	}
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	// Propagate a real close only while not cut (a cut connection stays
	// open, silent, until the proxy is closed).
	if s, ok := src.(*conn); ok && s.sw.IsCut() {
		return
	}
	dst.Close()
}
