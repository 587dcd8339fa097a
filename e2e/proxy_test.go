package e2e

import (
	"io"
	"net"
	"sync"
	"time"
)

// failoverProxy plays a load balancer in front of several servers: each new
// connection goes to the first target that accepts it.
type failoverProxy struct {
	lis     net.Listener
	targets []string
	mu      sync.Mutex
	counts  map[string]int
	conns   []net.Conn
}

func newFailoverProxy(targets ...string) (*failoverProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &failoverProxy{lis: l, targets: targets, counts: map[string]int{}}
	go p.serve()
	return p, nil
}

func (p *failoverProxy) Addr() string { return p.lis.Addr().String() }

func (p *failoverProxy) active(target string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[target]
}

func (p *failoverProxy) Close() error {
	err := p.lis.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	return err
}

func (p *failoverProxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *failoverProxy) forward(c net.Conn) {
	for _, target := range p.targets {
		up, err := net.DialTimeout("tcp", target, time.Second)
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.counts[target]++
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		done := make(chan struct{}, 2)
		go func() { _, _ = io.Copy(up, c); up.Close(); done <- struct{}{} }()
		go func() { _, _ = io.Copy(c, up); c.Close(); done <- struct{}{} }()
		<-done
		<-done
		p.mu.Lock()
		p.counts[target]--
		p.mu.Unlock()
		return
	}
	c.Close()
}
