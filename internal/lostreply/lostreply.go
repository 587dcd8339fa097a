package lostreply

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the proxy does with bytes from the server.
type Mode int

const (
	// Forward passes replies on at once.
	Forward Mode = iota
	// Delay holds replies for the configured delay, in order.
	Delay
	// Drop discards replies (the connection stays open).
	Drop
)

func (m Mode) String() string {
	switch m {
	case Forward:
		return "forward"
	case Delay:
		return "delay"
	case Drop:
		return "drop"
	}
	return "unknown"
}

// Bounds of one connection.
const (
	// chunkSize is the largest read from the server.
	chunkSize = 32 << 10
	// maxHeld is how many chunks one connection may queue; when full, the
	// proxy stops reading from the server (TCP backpressure), so at most
	// (maxHeld + 2) × chunkSize bytes are held per connection (the queue,
	// the chunk waiting for its time, the chunk waiting for room).
	maxHeld = 256
)

// Proxy forwards connections to a target; see the package doc.
type Proxy struct {
	lis  net.Listener // nil for a proxy made by newProxy in tests
	dial func() (net.Conn, error)

	mu     sync.Mutex // guards the following
	mode   Mode
	delay  time.Duration
	links  map[*link]struct{}
	closed bool

	wg       sync.WaitGroup
	dropped  atomic.Int64 // reply bytes dropped (Drop mode, or held at close)
	held     atomic.Int64 // reply bytes that were delayed
	requests atomic.Int64 // request bytes forwarded
}

// New listens on 127.0.0.1:0 and forwards each connection to target, in
// Forward mode.
func New(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := newProxy(func() (net.Conn, error) { return net.DialTimeout("tcp", target, 5*time.Second) })
	p.lis = l
	p.wg.Go(p.serve)
	return p, nil
}

func newProxy(dial func() (net.Conn, error)) *Proxy {
	return &Proxy{dial: dial, links: map[*link]struct{}{}}
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Forward makes replies pass at once (bytes already held keep their time).
func (p *Proxy) Forward() { p.set(Forward, 0) }

// Delay holds each reply byte for d after it arrived from the server.
func (p *Proxy) Delay(d time.Duration) { p.set(Delay, d) }

// Drop discards every reply byte from now on.
func (p *Proxy) Drop() { p.set(Drop, 0) }

func (p *Proxy) set(m Mode, d time.Duration) {
	p.mu.Lock()
	p.mode, p.delay = m, d
	p.mu.Unlock()
}

// Mode returns the current mode and delay.
func (p *Proxy) Mode() (Mode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

// Dropped is the number of reply bytes discarded (Drop mode, or still held
// when their connection was closed).
func (p *Proxy) Dropped() int64 { return p.dropped.Load() }

// Held is the number of reply bytes that were delayed.
func (p *Proxy) Held() int64 { return p.held.Load() }

// Requests is the number of request bytes forwarded.
func (p *Proxy) Requests() int64 { return p.requests.Load() }

// Conns is the number of open connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

// CloseConns closes every current connection (both sides), discards the
// bytes they hold (counted in Dropped when it returns) and waits for their
// goroutines; the proxy keeps accepting.
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	for _, l := range links {
		l.wg.Wait()
	}
}

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	var err error
	if p.lis != nil {
		err = p.lis.Close()
	}
	p.CloseConns()
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.handle(c)
	}
}

// handle proxies client to a new upstream connection; it returns at once.
func (p *Proxy) handle(client net.Conn) {
	up, err := p.dial()
	if err != nil {
		client.Close()
		return
	}
	l := &link{p: p, client: client, up: up, q: make(chan chunk, maxHeld), done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		up.Close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	l.wg.Go(l.requests)
	l.wg.Go(l.replies)
	l.wg.Go(l.deliver)
	p.wg.Go(l.wg.Wait)
}

type chunk struct {
	b  []byte
	at time.Time // when it may be written to the client
}

// link is one proxied connection.
type link struct {
	p          *Proxy
	client, up net.Conn
	q          chan chunk
	once       sync.Once
	done       chan struct{}
	wg         sync.WaitGroup // the link's three goroutines
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.up.Close()
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

// requests copies client → server at once.
func (l *link) requests() {
	defer l.close()
	buf := make([]byte, chunkSize)
	for {
		n, err := l.client.Read(buf)
		if n > 0 {
			// Counted before the write: once the server has the bytes its
			// reply may reach the client before this goroutine runs again,
			// and Requests must already include what was answered.
			l.p.requests.Add(int64(n))
			if _, werr := l.up.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// replies reads server → proxy and queues or drops by mode. A server that
// closes its side ends the link once the queue is delivered.
func (l *link) replies() {
	defer func() {
		close(l.q)
		select {
		case <-l.done: // deliver may have stopped before the last chunks
			l.discard(chunk{})
		default:
		}
	}()
	for {
		buf := make([]byte, chunkSize)
		n, err := l.up.Read(buf)
		if n > 0 {
			mode, delay := l.p.Mode()
			switch mode {
			case Drop:
				l.p.dropped.Add(int64(n))
			default:
				if mode == Delay {
					l.p.held.Add(int64(n))
				} else {
					delay = 0
				}
				select {
				case l.q <- chunk{b: buf[:n], at: time.Now().Add(delay)}:
				case <-l.done:
					l.p.dropped.Add(int64(n))
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// deliver writes queued replies to the client when they are due.
func (l *link) deliver() {
	defer l.close()
	for c := range l.q {
		if wait := time.Until(c.at); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				l.discard(c)
				return
			}
		}
		select {
		case <-l.done:
			l.discard(c)
			return
		default:
		}
		if _, err := l.client.Write(c.b); err != nil {
			l.discard(chunk{})
			return
		}
	}
}

// discard counts c and everything still queued as dropped.
func (l *link) discard(c chunk) {
	l.p.dropped.Add(int64(len(c.b)))
	for {
		select {
		case c, ok := <-l.q:
			if !ok {
				return
			}
			l.p.dropped.Add(int64(len(c.b)))
		default:
			return
		}
	}
}
