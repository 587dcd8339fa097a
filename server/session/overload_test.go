package session

import (
	"net"
	"testing"
	"time"
)

func TestAdmissionShedsBeyondThePendingCap(t *testing.T) {
	a := &admission{maxPending: 2}
	now := time.Now()
	if s := a.enter(now); s != "" {
		t.Fatalf("first Hello shed: %s", s)
	}
	if s := a.enter(now); s != "" {
		t.Fatalf("second Hello shed: %s", s)
	}
	if s := a.enter(now); s != "pending" {
		t.Fatalf("third Hello: %q; want shed (pending)", s)
	}
	a.leave()
	a.leave()
	if s := a.enter(now); s != "" {
		t.Fatalf("after two left: %q; want admitted", s)
	}
}

func TestQuantileOfTheCountsAddedSinceTheLastSample(t *testing.T) {
	buckets := []float64{0, 0.001, 0.01, 0.1, 1}
	prev := []uint64{10, 10, 0, 0}
	cur := []uint64{10, 60, 49, 1} // added: 50 in [1ms,10ms), 49 in [10ms,100ms), 1 in [100ms,1s)
	if q := quantile(prev, cur, buckets, 0.99); q != 100*time.Millisecond {
		t.Fatalf("p99 = %v; want 100ms (the upper bound of its bucket)", q)
	}
	if q := quantile(prev, cur, buckets, 0.5); q != 10*time.Millisecond {
		t.Fatalf("p50 = %v; want 10ms", q)
	}
	if q := quantile(cur, cur, buckets, 0.99); q != 0 {
		t.Fatalf("nothing added: %v; want 0", q)
	}
}

func TestRetryAfterIsJitteredAroundTheBase(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := retryAfter(4 * time.Second)
		if d < 2*time.Second || d >= 6*time.Second {
			t.Fatalf("retryAfter = %v; want in [2s, 6s)", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Fatalf("only %d distinct waits in 100: not jittered", len(seen))
	}
}

// A ping timeout is put off only on evidence of life: a queued message,
// bytes read after the Ping, or bytes the kernel holds unread.
func TestSignOfLifeNeedsEvidence(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	peer, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{Conn: raw}
	defer c.Close()
	s := &Session{conn: c}
	pingAt := time.Now()
	if ev := s.signOfLife(pingAt, 0); ev != "" {
		t.Fatalf("silent connection: %q; want no evidence", ev)
	}
	if ev := s.signOfLife(pingAt, 1); ev != "queued" {
		t.Fatalf("a queued message: %q; want queued", ev)
	}
	if _, err := peer.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Unread() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if ev := s.signOfLife(pingAt, 0); ev != "kernel" {
		t.Fatalf("bytes in the socket, unread: %q; want kernel", ev)
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil {
		t.Fatal(err)
	}
	if ev := s.signOfLife(pingAt, 0); ev != "read" {
		t.Fatalf("bytes read after the Ping: %q; want read", ev)
	}
	if ev := s.signOfLife(time.Now(), 0); ev != "" {
		t.Fatalf("nothing since a later Ping: %q; want no evidence", ev)
	}
}

// A replica that put off a ping timeout (it was late handling an answer)
// sheds new Hellos for the ping timeout after, then admits again.
func TestAdmissionShedsWhileTheReplicaIsLate(t *testing.T) {
	a := &admission{lateFor: 5 * time.Second}
	now := time.Now()
	if s := a.enter(now); s != "" {
		t.Fatalf("before any lateness: %q; want admitted", s)
	}
	a.leave()
	a.late(now)
	if s := a.enter(now.Add(4 * time.Second)); s != "late" {
		t.Fatalf("4s after a deferred timeout: %q; want shed (late)", s)
	}
	a.leave()
	if s := a.enter(now.Add(5 * time.Second)); s != "" {
		t.Fatalf("5s after: %q; want admitted", s)
	}
	a.leave()
}
