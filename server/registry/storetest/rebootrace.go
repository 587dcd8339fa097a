package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// RebootRace replays the bug Tether exists to fix against two replicas that
// share the store's storage (h.Replica): a device's session on replica A
// (lease 1) loses power; the device reboots and claims a new session on
// replica B (lease 2); A's late writes for lease 1 — a last-seen batch, an
// info update, and finally the release when A notices the timeout — are
// scattered at random around B's own writes. In each of n cases the device
// must read online with lease 2 at every step after B's claim, never show
// A's stale info, and end with lease 1 recorded as replaced (restarted).
//
// Half of the cases run the writes in a random sequential order; the other
// half run A's and B's writers concurrently.
func RebootRace(t *testing.T, h Harness, n int) {
	if h.Replica == nil {
		t.Skip("the harness has no Replica: multi-replica tests need shared storage")
	}
	a := h.New(t, Options{})
	b := h.Replica(t, a)
	ctx := context.Background()
	keepAlive := func() {
		for _, st := range []struct {
			s    registry.Store
			node string
		}{{a, "A"}, {b, "B"}} {
			if err := st.s.KeepNodeAlive(ctx, st.node, st.node+":7070", time.Hour); err != nil {
				t.Fatal(err)
			}
		}
	}
	keepAlive()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	wrong := 0
	for i := 0; i < n; i++ {
		if i%500 == 499 {
			keepAlive()
		}
		id := fmt.Sprintf("race-%d", i)
		if err := rebootRaceCase(ctx, a, b, id, rng, i%2 == 1); err != nil {
			wrong++
			if wrong <= 5 {
				t.Errorf("case %d: %v", i, err)
			}
		}
	}
	if wrong > 0 {
		t.Fatalf("%d of %d interleavings ended in a wrong state", wrong, n)
	}
}

type op struct {
	name string
	run  func() error
}

func rebootRaceCase(ctx context.Context, a, b registry.Store, id string, rng *rand.Rand, concurrent bool) error {
	now := time.Now()
	c1, err := a.Claim(ctx, registry.ClaimRequest{DeviceID: id, Node: "A", Mode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG,
		Info: &tetherv1.DeviceInfo{Hostname: "h", BootId: "boot-1"}, Now: now})
	if err != nil {
		return err
	}
	lease1 := c1.Lease
	var lease2 uint64
	var mu sync.Mutex // guards lease2 (read by the checks)
	oldOps := []op{
		{"A touch", func() error {
			_, err := a.Touch(ctx, []registry.Touch{{DeviceID: id, Lease: lease1, LastSeen: time.Now(), RTT: time.Millisecond}})
			return err
		}},
		{"A info", func() error {
			err := a.UpdateInfo(ctx, id, lease1, &tetherv1.DeviceInfo{Hostname: "stale", BootId: "boot-1"})
			return ignoreStale(err)
		}},
	}
	release1 := op{"A release", func() error {
		return ignoreStale(a.Release(ctx, id, registry.Disconnect{Lease: lease1, Node: "A", Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT, Time: time.Now()}))
	}}
	claim2 := op{"B claim", func() error {
		c2, err := b.Claim(ctx, registry.ClaimRequest{DeviceID: id, Node: "B", Mode: tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG,
			Info: &tetherv1.DeviceInfo{Hostname: "fresh", BootId: "boot-2"}, Now: time.Now()})
		if err == nil {
			mu.Lock()
			lease2 = c2.Lease
			mu.Unlock()
		}
		return err
	}}
	newOps := []op{
		{"B touch", func() error {
			mu.Lock()
			l := lease2
			mu.Unlock()
			res, err := b.Touch(ctx, []registry.Touch{{DeviceID: id, Lease: l, LastSeen: time.Now()}})
			if err == nil && len(res.Stale)+len(res.Missing)+len(res.Unknown) > 0 {
				return fmt.Errorf("B's touch of its current lease %d was refused", l)
			}
			return err
		}},
		{"B info", func() error {
			mu.Lock()
			l := lease2
			mu.Unlock()
			return b.UpdateInfo(ctx, id, l, &tetherv1.DeviceInfo{Hostname: "fresh", BootId: "boot-2"})
		}},
	}
	check := func(after string) error {
		mu.Lock()
		l := lease2
		mu.Unlock()
		if l == 0 {
			return nil
		}
		r, err := b.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("after %s: %w", after, err)
		}
		if r.Session == nil || r.Session.Lease != l || r.Session.Node != "B" {
			return fmt.Errorf("after %s: device reads %s, want online with lease %d on B", after, describe(r), l)
		}
		if r.Info.GetHostname() == "stale" {
			return fmt.Errorf("after %s: lease 1's info overwrote lease 2's", after)
		}
		return nil
	}

	if concurrent {
		// A's late writes (ending with its release) race B's claim and
		// B's own writes; B's writes follow its claim.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		aSeq := append(shuffled(rng, oldOps), release1)
		bSeq := append([]op{claim2}, shuffled(rng, newOps)...)
		// The release must come after B's claim (that is the race):
		// A waits for the claim before releasing.
		claimed := make(chan struct{})
		bSeq[0] = op{claim2.name, func() error { err := claim2.run(); close(claimed); return err }}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for _, o := range aSeq {
				if o.name == "A release" {
					<-claimed
				}
				if err := o.run(); err != nil {
					errs <- fmt.Errorf("%s: %w", o.name, err)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for _, o := range bSeq {
				if err := o.run(); err != nil {
					errs <- fmt.Errorf("%s: %w", o.name, err)
				}
				if err := check(o.name); err != nil {
					errs <- err
				}
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			return err
		}
	} else {
		// A random sequential order: some of A's writes before B's claim,
		// the rest (and A's release) shuffled among B's writes after it.
		old := shuffled(rng, oldOps)
		k := rng.IntN(len(old) + 1)
		ordered := append(append([]op{}, old[:k]...), claim2)
		rest := append(append(append([]op{}, old[k:]...), newOps...), release1)
		ordered = append(ordered, shuffled(rng, rest)...)
		for _, o := range ordered {
			if err := o.run(); err != nil {
				return fmt.Errorf("%s: %w", o.name, err)
			}
			if err := check(o.name); err != nil {
				return err
			}
		}
	}
	if err := check("all writes"); err != nil {
		return err
	}
	r, err := b.Get(ctx, id)
	if err != nil {
		return err
	}
	d := r.LastDisconnect
	if d == nil || d.Lease != lease1 || d.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED || d.Restart != tetherv1.DeviceRestart_DEVICE_RESTART_RESTARTED {
		return fmt.Errorf("history %+v, want lease %d ended as replaced (restarted)", d, lease1)
	}
	return nil
}

// ignoreStale accepts a refusal: A's writes may succeed while lease 1 is
// current and must be refused afterwards (stale once lease 2 exists,
// missing once lease 1 was released); the checks catch any that slip.
func ignoreStale(err error) error {
	if errors.Is(err, registry.ErrStaleLease) || errors.Is(err, registry.ErrMissing) {
		return nil
	}
	return err
}

func shuffled(rng *rand.Rand, ops []op) []op {
	out := append([]op(nil), ops...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
