package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestWatchConnParsesAChunkedStreamSplitAnywhere feeds the parser one
// response (headers, a heartbeat, two events, one line split over two
// chunks) cut at every byte boundary.
func TestWatchConnParsesAChunkedStreamSplitAnywhere(t *testing.T) {
	ev := func(id string, ms int) string {
		return fmt.Sprintf(`{"result":{"event":{"eventId":"%s","type":"EVENT_TYPE_ONLINE","time":"2026-12-02T02:45:44.%03dZ"}}}`+"\n", id, ms)
	}
	chunk := func(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }
	two := ev("1-2", 200)
	body := chunk(`{"result":{"event":{"eventId":"","time":"2026-12-02T02:45:44Z"}}}`+"\n") +
		chunk(ev("1-1", 100)) + chunk(two[:40]) + chunk(two[40:])
	stream := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + body
	now := time.Date(2026, 12, 2, 2, 45, 45, 0, time.UTC)
	for cut := 0; cut <= len(stream); cut++ {
		c := &watchConn{}
		var rep watchReport
		for _, part := range []string{stream[:cut], stream[cut:]} {
			c.in = append(c.in, part...)
			if !c.parse(now, &rep) {
				t.Fatalf("cut %d: parse refused the stream", cut)
			}
		}
		if !c.first || rep.Events != 2 || rep.Latencies[0] != 900 || rep.Latencies[1] != 800 {
			t.Fatalf("cut %d: first %v, %d events, latencies %v", cut, c.first, rep.Events, rep.Latencies)
		}
	}
	c := &watchConn{in: []byte("HTTP/1.1 429 Too Many Requests\r\n\r\n")}
	if c.parse(now, &watchReport{}) {
		t.Fatal("a 429 was accepted")
	}
	c = &watchConn{state: chunkSize, in: []byte(strings.Repeat("z", 3) + "\r\n")}
	if c.parse(now, &watchReport{}) {
		t.Fatal("a bad chunk size was accepted")
	}
}
