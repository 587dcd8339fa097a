package session_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// faultyStore wraps a real store and injects the ambiguous outcomes that
// production Redis produces: a write that was applied but whose reply was
// lost, and error replies for whole batches or single entries.
type faultyStore struct {
	registry.Store

	mu sync.Mutex // guards the following
	// lostClaimReplies: this many Claims are applied, then reported as
	// failed (a reply that arrived after the store timeout).
	lostClaimReplies int
	// touchErrors: Touch batches answer with an error reply for every
	// entry (OOM, BUSY, READONLY): outcome unknown.
	touchErrors bool
	// reconcileOff: Reconcile fails (so only the claim's undo can help).
	reconcileOff bool
}

var errLostReply = fmt.Errorf("redis claim script (timeout): %w: %w", registry.ErrUnavailable, context.DeadlineExceeded)

func (f *faultyStore) Claim(ctx context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	c, err := f.Store.Claim(ctx, req)
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil && f.lostClaimReplies > 0 {
		f.lostClaimReplies--
		return registry.Claimed{}, errLostReply
	}
	return c, err
}

func (f *faultyStore) Touch(ctx context.Context, touches []registry.Touch) (registry.TouchResult, error) {
	f.mu.Lock()
	bad := f.touchErrors
	f.mu.Unlock()
	if bad {
		return registry.TouchResult{Unknown: touches}, nil
	}
	return f.Store.Touch(ctx, touches)
}

func (f *faultyStore) Reconcile(ctx context.Context, node string, held []registry.Held, orphan func(string, uint64) bool) (registry.Reconciled, error) {
	f.mu.Lock()
	off := f.reconcileOff
	f.mu.Unlock()
	if off {
		return registry.Reconciled{}, fmt.Errorf("reconcile: %w", registry.ErrUnavailable)
	}
	return f.Store.Reconcile(ctx, node, held, orphan)
}

func (f *faultyStore) set(fn func(*faultyStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// helloStatus dials, sends Hello and returns the stream's first answer:
// the HelloAck, or the refusal status.
func helloStatus(t *testing.T, r *replica, id string) (*tetherv1.HelloAck, error) {
	t.Helper()
	d := dial(t, r)
	if err := d.stream.Send(hello(id, "b1", true)); err != nil {
		return nil, err
	}
	m, err := d.stream.Recv()
	if err != nil {
		return nil, err
	}
	return m.GetHelloAck(), nil
}

// A Claim whose reply is lost once is retried with the same claim id and
// the agent gets the lease the first attempt made: one session, no phantom.
func TestAClaimWhoseReplyWasLostOnceIsRetriedIntoTheSameLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := &faultyStore{Store: newStore(), lostClaimReplies: 1}
		r := startReplica(t, fs, testConfig("n1"))
		ack, err := helloStatus(t, r, "dev-1")
		if err != nil || ack == nil {
			t.Fatalf("Hello after one lost claim reply: %v, %v; want accepted", ack, err)
		}
		rec := mustGet(t, fs, "dev-1")
		if rec.Session == nil || rec.Session.Lease != ack.LeaseId || rec.Lease != ack.LeaseId {
			t.Fatalf("registry %+v; want exactly the acknowledged lease %d", rec.Session, ack.LeaseId)
		}
	})
}

// A Claim whose outcome stays unknown refuses the agent and is undone: the
// device never reads online without a session, even with reconciliation
// off.
func TestAClaimWhoseOutcomeStaysUnknownIsUndone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fs := &faultyStore{Store: newStore(), lostClaimReplies: 2, reconcileOff: true}
		r := startReplica(t, fs, testConfig("n1"))
		_, err := helloStatus(t, r, "dev-1")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("Hello with the claim's outcome unknown: %v; want UNAVAILABLE (retry)", err)
		}
		synctest.Wait()
		rec := mustGet(t, fs, "dev-1")
		if rec.Online() || rec.LastDisconnect == nil || rec.LastDisconnect.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED {
			t.Fatalf("after the refused Hello the registry reads %+v / %+v; want offline, ended ORPHANED", rec.Session, rec.LastDisconnect)
		}
		// The agent's retry works.
		if ack, err := helloStatus(t, r, "dev-1"); err != nil || ack == nil {
			t.Fatalf("retry: %v", err)
		}
	})
}

// A record that names this replica for a session it does not hold (a lost
// release, a claim by an earlier incarnation) is ended by reconciliation
// within ReconcileInterval; held sessions are untouched.
func TestReconciliationEndsPhantomsWithinItsInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newStore()
		cfg := testConfig("n1")
		cfg.ReconcileInterval = 10 * time.Second
		r := startReplica(t, st, cfg)
		live := connect(t, r, "dev-live", "b1", true)
		live.serve()
		// A phantom: the registry says n1 holds dev-ghost, n1 does not.
		ghost, err := st.Claim(context.Background(), registry.ClaimRequest{DeviceID: "dev-ghost", Node: "n1", Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for mustGet(t, st, "dev-ghost").Online() {
			if time.Since(start) > cfg.ReconcileInterval+cfg.StoreTimeout {
				t.Fatalf("phantom still online after %v", time.Since(start))
			}
			time.Sleep(100 * time.Millisecond)
		}
		rec := mustGet(t, st, "dev-ghost")
		if ld := rec.LastDisconnect; ld == nil || ld.Lease != ghost.Lease || ld.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED {
			t.Fatalf("phantom ended as %+v; want lease %d ORPHANED", ld, ghost.Lease)
		}
		if rec := mustGet(t, st, "dev-live"); rec.Session == nil || rec.Session.Lease != live.ack.LeaseId {
			t.Fatalf("live session after reconciliation: %+v", rec.Session)
		}
	})
}

// Error replies to the mirror's Touch batch never end a session, and the
// registry lost a held session's record is written back, not ended.
func TestTouchErrorRepliesAndLostRecordsNeverEndLiveSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		base := newStore()
		fs := &faultyStore{Store: base, touchErrors: true}
		cfg := testConfig("n1")
		cfg.MirrorInterval = 5 * time.Second
		r := startReplica(t, fs, cfg)
		d := connect(t, r, "dev-1", "b1", true)
		d.serve()
		time.Sleep(4 * cfg.MirrorInterval) // several touches, all error replies
		if n := r.hub.Len(); n != 1 {
			t.Fatalf("%d sessions after Touch error replies; want the live one kept", n)
		}
		// Now the registry loses the record of the session (a shard
		// restarted empty): the next Touch finds it missing and writes it
		// back with its own lease.
		fs.set(func(f *faultyStore) { f.touchErrors = false })
		if err := base.Release(context.Background(), "dev-1", registry.Disconnect{Lease: d.ack.LeaseId, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * cfg.MirrorInterval)
		if n := r.hub.Len(); n != 1 {
			t.Fatalf("%d sessions after the record was lost; want the live one kept", n)
		}
		rec := mustGet(t, base, "dev-1")
		if rec.Session == nil || rec.Session.Lease != d.ack.LeaseId {
			t.Fatalf("registry after the loss: %+v; want the live lease %d written back", rec.Session, d.ack.LeaseId)
		}
	})
}

// blockingStore holds every Claim until release is closed.
type blockingStore struct {
	registry.Store
	release chan struct{}
}

func (b *blockingStore) Claim(ctx context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return registry.Claimed{}, ctx.Err()
	}
	return b.Store.Claim(ctx, req)
}

// A saturated replica sheds new Hellos before the registry claim, with
// Close(OVERLOADED) and a retry_after, and writes nothing for them.
func TestHellosBeyondThePendingCapAreShedBeforeTheClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := &blockingStore{Store: newStore(), release: make(chan struct{})}
		cfg := testConfig("n1")
		cfg.MaxPendingHellos = 1
		r := startReplica(t, bs, cfg)
		first := dial(t, r)
		if err := first.stream.Send(hello("dev-1", "b1", true)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // dev-1's claim is in flight
		second := dial(t, r)
		if err := second.stream.Send(hello("dev-2", "b1", true)); err != nil {
			t.Fatal(err)
		}
		m, err := second.stream.Recv()
		if err != nil {
			t.Fatalf("shed Hello: %v; want a Close first", err)
		}
		c := m.GetClose()
		if c.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_OVERLOADED || c.GetRetryAfter().AsDuration() <= 0 {
			t.Fatalf("shed Hello got %v; want Close(OVERLOADED) with retry_after", m)
		}
		if _, err := second.stream.Recv(); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("shed Hello's status: %v; want RESOURCE_EXHAUSTED", err)
		}
		if _, err := bs.Get(context.Background(), "dev-2"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("the shed Hello wrote to the registry: %v", err)
		}
		close(bs.release)
		if m, err := first.stream.Recv(); err != nil || m.GetHelloAck() == nil {
			t.Fatalf("the admitted Hello: %v, %v; want HelloAck", m, err)
		}
	})
}

// The pending count covers a Hello until its session is installed, not the
// session's life: far more sessions than the cap connect one after another.
func TestPendingHellosDoNotCountLiveSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig("n1")
		cfg.MaxPendingHellos = 2
		r := startReplica(t, newStore(), cfg)
		for i := range 10 {
			d := connect(t, r, fmt.Sprintf("dev-%d", i), "b1", true)
			d.serve()
		}
		if n := r.hub.Len(); n != 10 {
			t.Fatalf("%d sessions; want all 10 (the cap is on Hellos in flight)", n)
		}
	})
}

// An agent that gives up while its claim is slow never gets a session: the
// late claim is released, and nothing counts as a session that ended.
func TestAClaimThatCompletesAfterTheAgentLeftIsReleased(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		bs := &lateStore{Store: newStore(), release: make(chan struct{})}
		r := startReplica(t, bs, testConfig("n1"))
		d := dial(t, r)
		if err := d.stream.Send(hello("dev-1", "b1", true)); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the claim is in flight
		d.cancel()      // the agent gives up
		synctest.Wait()
		close(bs.release)
		synctest.Wait()
		if n := r.hub.Len(); n != 0 {
			t.Fatalf("%d sessions held; want none", n)
		}
		rec := mustGet(t, bs, "dev-1")
		if rec.Online() || rec.LastDisconnect == nil || rec.LastDisconnect.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED {
			t.Fatalf("registry after the late claim: %+v / %+v; want offline, released", rec.Session, rec.LastDisconnect)
		}
	})
}

// lateStore applies every Claim once release is closed, whatever the
// caller's context says by then (a slow Redis finishing a script).
type lateStore struct {
	registry.Store
	release chan struct{}
}

func (l *lateStore) Claim(_ context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	<-l.release
	return l.Store.Claim(context.Background(), req)
}
