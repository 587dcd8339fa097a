package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

type watchLine struct {
	Result struct {
		Event struct {
			EventID  string `json:"eventId"`
			Type     string `json:"type"`
			DeviceID string `json:"deviceId"`
			LeaseID  string `json:"leaseId"`
			Reason   string `json:"reason"`
		} `json:"event"`
	} `json:"result"`
	Error json.RawMessage `json:"error"`
}

// openWatch opens GET /v1/devices:watch and returns a channel of its lines.
func openWatch(t *testing.T, ctx context.Context, url string) <-chan watchLine {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("watch: %s", resp.Status)
	}
	out := make(chan watchLine, 4096)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		for l := range lines(resp.Body) {
			var w watchLine
			if json.Unmarshal([]byte(l), &w) == nil {
				if len(w.Error) > 0 {
					t.Logf("watch error line: %s", l)
				}
				out <- w
			}
		}
	}()
	return out
}

// TestWatchResumeMissesNothing: a watcher through the gateway goes away,
// devices connect and disconnect in a burst on two replicas, and the watcher
// resumes with its last event id: it receives exactly the events a watcher
// that never left received, in the same order.
func TestWatchResumeMissesNothing(t *testing.T) {
	c := startCluster(t, 2)
	gw := freeAddr(t)
	start(t, "tether-gateway", "--listen", gw, "--server", c.grpc[0])
	waitListening(t, gw)
	base := "http://" + gw + "/v1/devices:watch"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reference := openWatch(t, ctx, base)
	awayCtx, leave := context.WithCancel(ctx)
	away := openWatch(t, awayCtx, base)

	// One event seen by the watcher before it leaves.
	first := start(t, "tether-agent", "--server", c.grpc[0], "--device-id", "w-0", "--config", writeAgentConfig(t, ""))
	var last string
	deadline := time.After(20 * time.Second)
	for last == "" {
		select {
		case w, ok := <-away:
			if !ok {
				t.Fatal("watch ended")
			}
			if w.Result.Event.Type == "EVENT_TYPE_ONLINE" {
				last = w.Result.Event.EventID
			}
		case <-deadline:
			t.Fatal("no ONLINE event")
		}
	}
	leave()

	// The burst while it is away: 8 devices connect on both replicas and
	// disconnect again, and w-0 leaves.
	const n = 8
	var agents []*proc
	for i := 1; i <= n; i++ {
		agents = append(agents, start(t, "tether-agent", "--server", c.grpc[i%2], "--device-id", fmt.Sprintf("w-%d", i), "--config", writeAgentConfig(t, "")))
	}
	for i := 1; i <= n; i++ {
		waitOnline(t, c.base(0), fmt.Sprintf("w-%d", i), 20*time.Second)
	}
	for _, a := range append(agents, first) {
		a.stop(5 * time.Second)
	}
	want := 2*n + 1 // n ONLINE + n OFFLINE + w-0's OFFLINE
	collect := func(ch <-chan watchLine, after string) []string {
		var got []string
		seen := after == ""
		deadline := time.After(20 * time.Second)
		for len(got) < want {
			select {
			case w, ok := <-ch:
				if !ok {
					t.Fatalf("watch ended after %d events", len(got))
				}
				e := w.Result.Event
				if e.EventID == "" {
					continue // heartbeats
				}
				if !seen {
					seen = e.EventID == after
					continue
				}
				got = append(got, fmt.Sprintf("%s %s %s %s", e.EventID, e.Type, e.DeviceID, e.Reason))
			case <-deadline:
				t.Fatalf("only %d of %d events: %v", len(got), want, got)
			}
		}
		return got
	}
	refEvents := collect(reference, last)
	resumed := openWatch(t, ctx, base+"?after_event_id="+last)
	gotEvents := collect(resumed, "")
	for i := range refEvents {
		if refEvents[i] != gotEvents[i] {
			t.Fatalf("event %d: resumed watcher got %q, the watcher that stayed got %q\nresumed: %v\nreference: %v", i, gotEvents[i], refEvents[i], gotEvents, refEvents)
		}
	}
	t.Logf("resumed watcher received all %d events of the burst, in order", len(gotEvents))
}
