package feed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
)

// claim writes one ONLINE event for id.
func claim(t *testing.T, st *memstore.Store, id string) {
	t.Helper()
	if _, err := st.Claim(context.Background(), registry.ClaimRequest{DeviceID: id, Node: "n1", Mode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

// runFeed starts a feed with the default config over a fresh embedded store;
// both end with the test.
func runFeed(t *testing.T) (*memstore.Store, *Feed, context.Context) {
	t.Helper()
	st := memstore.New(memstore.Options{})
	t.Cleanup(func() { st.Close() })
	f := New(st, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go f.Run(ctx)
	return st, f, ctx
}

func recv(t *testing.T, w *Watcher) *Item {
	t.Helper()
	select {
	case e, ok := <-w.Events():
		if !ok {
			t.Fatalf("watcher ended (reason %d)", w.Reason())
		}
		return e
	case <-time.After(time.Minute):
		t.Fatal("no event within a minute")
	}
	return nil
}

func TestEveryWatcherGetsEveryEventFromOneReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{})
		defer st.Close()
		f := New(st, Config{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { f.Run(ctx); close(done) }()
		var ws []*Watcher
		for range 500 {
			w, err := f.Subscribe(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		for i := range 20 {
			claim(t, st, fmt.Sprintf("dev-%02d", i))
		}
		for _, w := range ws {
			for i := range 20 {
				if e := recv(t, w); e.DeviceID != fmt.Sprintf("dev-%02d", i) {
					t.Fatalf("event %d for %s, want dev-%02d", i, e.DeviceID, i)
				}
			}
		}
		synctest.Wait()
		if s := f.Stats(); s.Watchers != 500 || s.Events != 20 {
			t.Fatalf("stats %+v", s)
		}
		cancel()
		<-done
		for _, w := range ws {
			if _, ok := <-w.Events(); ok || w.Reason() != EndClosed {
				t.Fatalf("after Run ended: reason %d", w.Reason())
			}
		}
		if _, err := f.Subscribe(t.Context(), ""); !errors.Is(err, ErrClosed) {
			t.Fatalf("subscribe after close: %v", err)
		}
	})
}

func TestSlowWatcherIsEndedWithoutBlockingOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{})
		defer st.Close()
		f := New(st, Config{Buffer: 4})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go f.Run(ctx)
		slow, _ := f.Subscribe(ctx, "")
		fast, _ := f.Subscribe(ctx, "")
		var last string
		for i := range 10 {
			claim(t, st, fmt.Sprintf("dev-%02d", i))
			last = recv(t, fast).ID // the fast one keeps up
		}
		// The slow one never read: it holds its 4 buffered events, then
		// its channel is closed with EndSlow.
		var got []*Item
		for e := range slow.Events() {
			got = append(got, e)
		}
		if len(got) != 4 || slow.Reason() != EndSlow {
			t.Fatalf("slow watcher: %d events, reason %d; want 4, EndSlow", len(got), slow.Reason())
		}
		// It resumes after its last event from the history, missing nothing.
		again, err := f.Subscribe(ctx, got[3].ID)
		if err != nil {
			t.Fatal(err)
		}
		for i := 4; i < 10; i++ {
			if e := recv(t, again); e.DeviceID != fmt.Sprintf("dev-%02d", i) {
				t.Fatalf("resumed: got %s, want dev-%02d", e.DeviceID, i)
			}
		}
		if fast.Reason() != EndNone || last == "" {
			t.Fatalf("fast watcher reason %d", fast.Reason())
		}
	})
}

func TestOldResumePointIsNotRetainedAndExpiredIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{EventRetention: 100})
		defer st.Close()
		f := New(st, Config{History: 5})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go f.Run(ctx)
		w, _ := f.Subscribe(ctx, "")
		var ids []string
		for i := range 10 {
			claim(t, st, fmt.Sprintf("dev-%02d", i))
			ids = append(ids, recv(t, w).ID)
		}
		synctest.Wait()
		if _, err := f.Subscribe(ctx, ids[2]); !errors.Is(err, ErrNotRetained) {
			t.Fatalf("resume before the history: %v, want ErrNotRetained", err)
		}
		w2, err := f.Subscribe(ctx, ids[6])
		if err != nil {
			t.Fatal(err)
		}
		for i := 7; i < 10; i++ {
			if e := recv(t, w2); e.ID != ids[i] {
				t.Fatalf("replay: %s, want %s", e.ID, ids[i])
			}
		}
		// An id of another store instance (e.g. before a restart) is ahead
		// or behind; the store says it is not retained.
		if _, err := f.Subscribe(ctx, "9999999999999999999-1"); !errors.Is(err, registry.ErrEventsExpired) {
			t.Fatalf("foreign id: %v, want ErrEventsExpired", err)
		}
	})
}

// trimmingSource fails one read with ErrEventsExpired, as Redis does when
// the stream was trimmed past the feed's position.
type trimmingSource struct {
	Source
	fail chan struct{}
}

func (s *trimmingSource) ReadEvents(ctx context.Context, after string, limit int, wait time.Duration) ([]registry.Event, error) {
	select {
	case <-s.fail:
		return nil, fmt.Errorf("trimmed: %w", registry.ErrEventsExpired)
	default:
	}
	return s.Source.ReadEvents(ctx, after, limit, wait)
}

func TestLostPlaceEndsEveryWatcherForResnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New(memstore.Options{})
		defer st.Close()
		src := &trimmingSource{Source: st, fail: make(chan struct{})}
		f := New(src, Config{Wait: time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go f.Run(ctx)
		w, _ := f.Subscribe(ctx, "")
		close(src.fail)
		for range w.Events() {
		}
		if w.Reason() != EndResnapshot {
			t.Fatalf("reason %d, want EndResnapshot", w.Reason())
		}
		if f.Stats().Resnapshots == 0 {
			t.Fatal("no resnapshot counted")
		}
	})
}

func TestCompareIDs(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"1-2", "1-10", -1}, {"2-0", "1-99", 1}, {"5-5", "5-5", 0}, {"", "0-0", -1}, {"3", "3-1", -1},
	} {
		if got := CompareIDs(c.a, c.b); got != c.want {
			t.Errorf("CompareIDs(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestFanOutWaitsForAChunkToTakeItsEventsBeforeTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, f, ctx := runFeed(t)
		var ws []*Watcher
		for range 3 * fanoutChunk {
			w, err := f.Subscribe(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
		}
		handed := func() (n int) {
			for _, w := range ws {
				n += w.Pending()
			}
			return n
		}
		claim(t, st, "dev-1")
		synctest.Wait()
		if n := handed(); n != fanoutChunk {
			t.Fatalf("%d watchers hold the event before any took it; want the first chunk of %d", n, fanoutChunk)
		}
		// The first chunk takes its events: the next chunk gets them at
		// once, without waiting for handoffWait.
		start := time.Now()
		for _, w := range ws {
			if w.Pending() > 0 {
				<-w.Events()
				w.Taken()
			}
		}
		synctest.Wait()
		if n := handed(); n != fanoutChunk || time.Since(start) != 0 {
			t.Fatalf("after the first chunk took its events: %d hold it after %v; want the second chunk at once", n, time.Since(start))
		}
		// The second chunk never takes them: the third gets the event
		// after handoffWait.
		time.Sleep(handoffWait)
		synctest.Wait()
		if n := handed(); n != 2*fanoutChunk {
			t.Fatalf("%d hold the event %v after a chunk that did not take it; want the third chunk too", n, handoffWait)
		}
		time.Sleep(handoffWait) // the third chunk does not take them either
		synctest.Wait()
		if s := f.Stats(); s.HandoffTimeouts != 2 {
			t.Fatalf("handoff timeouts = %d; want 2 (the second and third chunks)", s.HandoffTimeouts)
		}
		// The next event: the first chunk's watchers are live now, the two
		// stalled chunks are not waited for again, so the whole fan-out
		// takes no time.
		var live atomic.Int32
		for _, w := range ws {
			if w.Pending() == 0 {
				go func() {
					for range w.Events() {
						live.Add(1)
						w.Taken()
					}
				}()
			}
		}
		start = time.Now()
		claim(t, st, "dev-2")
		synctest.Wait()
		if got := live.Load(); got != fanoutChunk || time.Since(start) != 0 || f.Stats().HandoffTimeouts != 2 {
			t.Fatalf("second event: %d live watchers got it after %v, %d handoff timeouts; want %d at once, still 2",
				got, time.Since(start), f.Stats().HandoffTimeouts, fanoutChunk)
		}
		for _, w := range ws {
			if w.Pending() != 0 && w.Pending() != 2 {
				t.Fatalf("a stalled watcher holds %d events; want both", w.Pending())
			}
			w.Close()
		}
		synctest.Wait()
		if s := f.Stats(); s.Events != 2 || s.Watchers != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestDirectWritersAndEventsThatJoinAFanOut: watchers with a Direct get their
// events from the fan-out itself, in order, one call per batch; a watcher
// whose Direct refuses gets them queued. An event that reaches the store
// while a fan-out runs joins it: the watchers not reached yet get both events
// in one call, those already served and one that subscribed in between get
// the new event in a second pass, and one that subscribes after the join
// does not get it.
func TestDirectWritersAndEventsThatJoinAFanOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, f, ctx := runFeed(t)
		const n = 3 * fanoutChunk
		calls := make([][][]string, n) // per watcher: the device ids of each Direct call
		var ws []*Watcher
		var between *Watcher
		var triggered atomic.Bool
		for i := range n {
			w, err := f.Subscribe(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			ws = append(ws, w)
			if i == n-1 {
				w.SetDirect(func([]*Item) bool { return false }) // always refuses: queued
				continue
			}
			w.SetDirect(func(evs []*Item) bool {
				var ids []string
				for _, e := range evs {
					ids = append(ids, e.DeviceID)
				}
				calls[i] = append(calls[i], ids)
				if triggered.CompareAndSwap(false, true) {
					// While the first chunk is written: a watcher
					// subscribes, a new event arrives, and time passes.
					var err error
					if between, err = f.Subscribe(ctx, ""); err != nil {
						t.Error(err)
					}
					claim(t, st, "second")
					time.Sleep(2 * joinPoll)
				}
				return true
			})
		}
		claim(t, st, "first")
		time.Sleep(time.Second) // the fan-out, its sleep and the second pass
		synctest.Wait()
		// The first chunk (targets are in map order) was served before
		// the join, the other chunks after it.
		served, joined := 0, 0
		for i := range n - 1 {
			switch got := fmt.Sprint(calls[i]); got {
			case "[[first] [second]]":
				served++
			case "[[first second]]":
				joined++
			default:
				t.Fatalf("watcher %d: %s", i, got)
			}
		}
		if served < fanoutChunk-1 || served > fanoutChunk {
			t.Fatalf("%d watchers served before the join, %d after; want the first chunk before", served, joined)
		}
		refused := ws[n-1]
		for _, want := range []string{"first", "second"} {
			if e := recv(t, refused); e.DeviceID != want {
				t.Fatalf("refusing watcher got %s, want %s", e.DeviceID, want)
			}
		}
		refused.Wrote(2)
		if e := recv(t, between); e.DeviceID != "second" {
			t.Fatalf("watcher subscribed during the fan-out got %s, want second", e.DeviceID)
		}
		after, err := f.Subscribe(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		claim(t, st, "third")
		time.Sleep(time.Second)
		synctest.Wait()
		if e := recv(t, after); e.DeviceID != "third" {
			t.Fatalf("watcher subscribed after the join got %s, want third", e.DeviceID)
		}
		for i := range n - 1 {
			if c := calls[i]; fmt.Sprint(c[len(c)-1]) != "[third]" {
				t.Fatalf("watcher %d in the end: %v", i, c)
			}
		}
		if s := f.Stats(); s.Joins != 1 || s.Events != 3 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// TestFanOutGoesInSubscriptionOrderFromARotatingStart: every fan-out serves
// the watchers in the order they subscribed (a client's connections opened
// together stay together), starting at a different watcher each time.
func TestFanOutGoesInSubscriptionOrderFromARotatingStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, f, ctx := runFeed(t)
		const n = 10
		var order []int // the watchers' indexes, in the order of Direct calls
		for i := range n {
			w, err := f.Subscribe(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			w.SetDirect(func([]*Item) bool { order = append(order, i); return true })
		}
		starts := map[int]bool{}
		for e := range 3 {
			order = order[:0]
			claim(t, st, fmt.Sprintf("dev-%d", e))
			synctest.Wait()
			if len(order) != n {
				t.Fatalf("fan-out %d served %d watchers, want %d", e, len(order), n)
			}
			for j := range order {
				if order[j] != (order[0]+j)%n {
					t.Fatalf("fan-out %d order %v: not the subscription order rotated", e, order)
				}
			}
			starts[order[0]] = true
		}
		if len(starts) != 3 {
			t.Fatalf("three fan-outs started at %v: want three different watchers", starts)
		}
	})
}
