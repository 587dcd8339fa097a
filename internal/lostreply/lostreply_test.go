package lostreply

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pipeProxy is a proxy (without a listener) whose upstream is one end of a
// net.Pipe; it returns the client's end and the server's end.
func pipeProxy(t *testing.T) (p *Proxy, client, server net.Conn) {
	t.Helper()
	srvSide, upSide := net.Pipe()
	p = newProxy(func() (net.Conn, error) { return upSide, nil })
	cliSide, proxySide := net.Pipe()
	p.handle(proxySide)
	t.Cleanup(func() {
		cliSide.Close()
		srvSide.Close()
		p.Close()
	})
	return p, cliSide, srvSide
}

func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func TestForwardPassesBothWaysAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, c, s := pipeProxy(t)
		began := time.Now()
		write(t, c, "PING")
		if got := readN(t, s, 4); string(got) != "PING" {
			t.Fatalf("server got %q", got)
		}
		write(t, s, "PONG")
		if got := readN(t, c, 4); string(got) != "PONG" {
			t.Fatalf("client got %q", got)
		}
		if d := time.Since(began); d != 0 {
			t.Fatalf("forwarding took %v of fake time, want 0", d)
		}
	})
}

func TestDelayHoldsRepliesNotRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, c, s := pipeProxy(t)
		p.Delay(5 * time.Second)
		began := time.Now()
		write(t, c, "SET k v")
		readN(t, s, 7)
		if d := time.Since(began); d != 0 {
			t.Fatalf("the request took %v, want it forwarded at once", d)
		}
		write(t, s, "+OK")
		write(t, s, "+OK2") // a second reply, later in the stream
		if got := readN(t, c, 7); string(got) != "+OK+OK2" {
			t.Fatalf("client got %q", got)
		}
		if d := time.Since(began); d != 5*time.Second {
			t.Fatalf("the reply arrived after %v, want exactly the 5s delay", d)
		}
		if p.Held() != 7 || p.Dropped() != 0 {
			t.Fatalf("held %d dropped %d, want 7 and 0", p.Held(), p.Dropped())
		}
	})
}

func TestDropLosesRepliesAndKeepsTheConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, c, s := pipeProxy(t)
		p.Drop()
		write(t, c, "INCR n")
		readN(t, s, 6)
		write(t, s, ":1")
		synctest.Wait()
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		if n, err := c.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("client read %d bytes, %v; want nothing until its deadline", n, err)
		}
		if p.Dropped() != 2 {
			t.Fatalf("dropped %d bytes, want 2", p.Dropped())
		}
		p.Forward()
		_ = c.SetReadDeadline(time.Time{})
		write(t, c, "INCR n")
		readN(t, s, 6)
		write(t, s, ":2")
		if got := readN(t, c, 2); string(got) != ":2" {
			t.Fatalf("after Forward the client got %q, want the next reply", got)
		}
	})
}

func TestCloseConnsDiscardsHeldReplies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, c, s := pipeProxy(t)
		p.Delay(time.Hour)
		write(t, c, "GET k")
		readN(t, s, 5)
		write(t, s, "$1\r\nv\r\n")
		synctest.Wait()
		if p.Conns() != 1 {
			t.Fatalf("%d connections, want 1", p.Conns())
		}
		p.CloseConns()
		if n, err := c.Read(make([]byte, 16)); err == nil {
			t.Fatalf("client read %d bytes after CloseConns, want the connection closed", n)
		}
		synctest.Wait()
		if p.Dropped() != 7 || p.Conns() != 0 {
			t.Fatalf("dropped %d bytes with %d connections open, want 7 and 0", p.Dropped(), p.Conns())
		}
	})
}

// TestHeldRepliesAreBounded: with replies held, the proxy stops reading from
// the server once maxHeld chunks wait (the server's writes block), and
// delivers everything, in order, when they are due.
func TestHeldRepliesAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, c, s := pipeProxy(t)
		p.Delay(time.Hour)
		const total = maxHeld + 50
		var written atomic.Int64
		go func() {
			for i := range total {
				if _, err := s.Write([]byte{byte(i)}); err != nil {
					return
				}
				written.Add(1)
			}
		}()
		synctest.Wait()
		// One chunk waiting for its time in deliver, maxHeld queued, one
		// more read and waiting for room in the queue.
		if w := written.Load(); w != maxHeld+2 {
			t.Fatalf("the server wrote %d one-byte replies while they were held, want %d (bounded)", w, maxHeld+2)
		}
		got := readN(t, c, total) // blocks until the hour has passed
		for i, b := range got {
			if b != byte(i) {
				t.Fatalf("byte %d is %d: out of order", i, b)
			}
		}
	})
}

// TestRealSockets runs the proxy on loopback in front of an echo server.
func TestRealSockets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	p, err := New(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("x"), 3*chunkSize) // more than one chunk
	go func() { _, _ = c.Write(msg) }()
	if got := readN(t, c, len(msg)); !bytes.Equal(got, msg) {
		t.Fatal("echo through the proxy differs")
	}
	if p.Requests() != int64(len(msg)) {
		t.Fatalf("requests %d bytes, want %d", p.Requests(), len(msg))
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes after Close", n)
	}
}
