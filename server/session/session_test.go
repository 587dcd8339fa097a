package session_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

const (
	reasonPingTimeout = tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT
	reasonKeepalive   = tetherv1.DisconnectReason_DISCONNECT_REASON_KEEPALIVE_TIMEOUT
	reasonReplaced    = tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED
	reasonProtocol    = tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR
	reasonClient      = tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED
)

// bound is the product's promise: a silent device is offline within
// ping-interval + ping-timeout + 1s.
const bound = 10*time.Second + 5*time.Second + time.Second

// waitOffline advances the fake clock in small steps until the device reads
// offline, and returns how long that took.
func waitOffline(t *testing.T, s registry.Store, id string, limit time.Duration) (registry.Record, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) <= limit {
		synctest.Wait()
		if r := mustGet(t, s, id); !r.Online() {
			return r, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("device %s still online after %v", id, limit)
	return registry.Record{}, 0
}

func TestHelloAckCarriesLeaseScheduleAndMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "boot-1", true)
		if d.ack.GetLeaseId() == 0 || d.ack.GetServerNode() != "a" {
			t.Fatalf("ack = %v", d.ack)
		}
		if d.ack.GetPingInterval().AsDuration() != 10*time.Second || d.ack.GetPingTimeout().AsDuration() != 5*time.Second {
			t.Fatalf("schedule = %v / %v", d.ack.GetPingInterval().AsDuration(), d.ack.GetPingTimeout().AsDuration())
		}
		if d.ack.GetLivenessMode() != tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG {
			t.Fatalf("mode = %v", d.ack.GetLivenessMode())
		}
		legacy := connect(t, r, "dev-2", "boot-2", false)
		if legacy.ack.GetLivenessMode() != tetherv1.LivenessMode_LIVENESS_MODE_TRANSPORT_ONLY {
			t.Fatalf("legacy mode = %v", legacy.ack.GetLivenessMode())
		}
		rec := mustGet(t, store, "dev-1")
		if !rec.Online() || rec.Session.Lease != d.ack.GetLeaseId() || rec.Session.Node != "a" {
			t.Fatalf("record = %+v", rec)
		}
	})
}

func TestBadFirstMessagesAreRefusedWithClearStatus(t *testing.T) {
	cases := []struct {
		name string
		msg  *tetherv1.ConnectRequest
		code codes.Code
	}{
		{"pong before hello", &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: 1}}}, codes.InvalidArgument},
		{"empty message", &tetherv1.ConnectRequest{}, codes.InvalidArgument},
		{"bad device id", hello("no spaces allowed", "b", true), codes.InvalidArgument},
		{"empty device id", hello("", "b", true), codes.InvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := startReplica(t, newStore(), testConfig("a"))
				d := dial(t, r)
				if err := d.stream.Send(tc.msg); err != nil {
					t.Fatal(err)
				}
				_, err := d.stream.Recv()
				if status.Code(err) != tc.code {
					t.Fatalf("Recv error = %v, want %v", err, tc.code)
				}
				if r.hub.Len() != 0 {
					t.Fatal("a refused stream left a session behind")
				}
			})
		})
	}
}

func TestNoHelloWithinTheHelloTimeoutEndsTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := startReplica(t, newStore(), testConfig("a"))
		d := dial(t, r)
		start := time.Now()
		_, err := d.stream.Recv()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("Recv error = %v, want DeadlineExceeded", err)
		}
		if got := time.Since(start); got != 5*time.Second {
			t.Fatalf("stream ended after %v, want the 5s hello timeout", got)
		}
	})
}

func TestSecondHelloEndsTheSessionAsProtocolError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "b", true)
		if err := d.stream.Send(hello("dev-1", "b", true)); err != nil {
			t.Fatal(err)
		}
		for {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			if c := m.GetClose(); c != nil {
				if c.GetReason() != reasonProtocol {
					t.Fatalf("Close reason = %v", c.GetReason())
				}
				break
			}
		}
		if _, err := d.stream.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("stream status after the Close = %v, want InvalidArgument", err)
		}
		rec, _ := waitOffline(t, store, "dev-1", time.Second)
		if rec.LastDisconnect.Reason != reasonProtocol {
			t.Fatalf("recorded reason = %v", rec.LastDisconnect.Reason)
		}
	})
}

func TestPowerLossIsDetectedWithinTheBound(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pong   bool
		reason tetherv1.DisconnectReason
	}{
		{"app-pong agent", true, reasonPingTimeout},
		{"legacy agent judged by transport keepalive", false, reasonKeepalive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newStore()
				r := startReplica(t, store, testConfig("a"))
				d := connect(t, r, "dev-1", "b", tc.pong)
				d.serve()
				// Run a while first, so the cut lands mid-schedule.
				time.Sleep(37 * time.Second)
				if !mustGet(t, store, "dev-1").Online() {
					t.Fatal("a healthy device went offline")
				}
				d.sw.Cut()
				rec, took := waitOffline(t, store, "dev-1", time.Minute)
				if took > bound {
					t.Errorf("offline after %v, want within %v", took, bound)
				}
				if rec.LastDisconnect.Reason != tc.reason {
					t.Errorf("reason = %v, want %v", rec.LastDisconnect.Reason, tc.reason)
				}
			})
		})
	}
}

func TestAnAgentThatNeverPongsIsEndedByPingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "b", true) // claims Pong support but never answers
		start := time.Now()
		var closeMsg *tetherv1.Close
		for closeMsg == nil {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			closeMsg = m.GetClose()
		}
		if closeMsg.GetReason() != reasonPingTimeout {
			t.Fatalf("Close reason = %v", closeMsg.GetReason())
		}
		if took := time.Since(start); took > bound {
			t.Fatalf("ended after %v, want within %v", took, bound)
		}
	})
}

func TestHealthyAgentsStayConnectedForManyIntervals(t *testing.T) {
	for _, pong := range []bool{true, false} {
		t.Run(fmt.Sprintf("pong=%v", pong), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newStore()
				r := startReplica(t, store, testConfig("a"))
				d := connect(t, r, "dev-1", "b", pong)
				d.serve()
				time.Sleep(30 * time.Minute)
				synctest.Wait()
				rec := mustGet(t, store, "dev-1")
				if !rec.Online() || rec.Session.Lease != d.ack.GetLeaseId() {
					t.Fatalf("after 30 min: %+v", rec)
				}
			})
		})
	}
}

func TestTakeoverOnOneReplicaClosesTheOldStreamAsReplaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		old := connect(t, r, "dev-1", "boot-1", true)
		fresh := connect(t, r, "dev-1", "boot-2", true)
		fresh.serve()
		if fresh.ack.GetLeaseId() <= old.ack.GetLeaseId() {
			t.Fatalf("new lease %d not above old %d", fresh.ack.GetLeaseId(), old.ack.GetLeaseId())
		}
		var got *tetherv1.Close
		for got == nil {
			m, err := old.stream.Recv()
			if err != nil {
				t.Fatalf("old stream ended without Close: %v", err)
			}
			got = m.GetClose()
		}
		if got.GetReason() != reasonReplaced {
			t.Fatalf("old stream Close reason = %v", got.GetReason())
		}
		if _, err := old.stream.Recv(); err == nil || err == io.EOF && false {
			t.Fatalf("old stream still open after Close")
		}
		synctest.Wait()
		rec := mustGet(t, store, "dev-1")
		if !rec.Online() || rec.Session.Lease != fresh.ack.GetLeaseId() {
			t.Fatalf("record = %+v", rec)
		}
		if ld := rec.LastDisconnect; ld == nil || ld.Lease != old.ack.GetLeaseId() || ld.Reason != reasonReplaced ||
			ld.Restart != tetherv1.DeviceRestart_DEVICE_RESTART_RESTARTED {
			t.Fatalf("last disconnect = %+v", rec.LastDisconnect)
		}
		if s := r.hub.Lookup("dev-1"); s == nil || s.Lease != fresh.ack.GetLeaseId() {
			t.Fatal("hub does not hold the new session")
		}
	})
}

// TestRebootRaceAcrossReplicas is the bug Tether exists to fix: the device
// loses power on replica A (lease 1), comes back on replica B (lease 2)
// before A notices, and A's late cleanup must not take lease 2 offline.
func TestRebootRaceAcrossReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		a := startReplica(t, store, testConfig("a"))
		b := startReplica(t, store, testConfig("b"))
		old := connect(t, a, "dev-1", "boot-1", true)
		old.serve()
		time.Sleep(3 * time.Second)
		old.sw.Cut()
		time.Sleep(2 * time.Second)
		fresh := connect(t, b, "dev-1", "boot-2", true)
		fresh.serve()
		// Until well after A has detected lease 1 dead, the device must read
		// online with lease 2 at every instant.
		for i := 0; i < 400; i++ {
			synctest.Wait()
			rec := mustGet(t, store, "dev-1")
			if !rec.Online() || rec.Session.Lease != fresh.ack.GetLeaseId() || rec.Session.Node != "b" {
				t.Fatalf("at +%v: record = %+v", time.Duration(i)*100*time.Millisecond, rec)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if a.hub.Len() != 0 {
			t.Fatal("replica A still holds the dead session")
		}
		rec := mustGet(t, store, "dev-1")
		if ld := rec.LastDisconnect; ld == nil || ld.Lease != old.ack.GetLeaseId() || ld.Reason != reasonReplaced ||
			ld.Restart != tetherv1.DeviceRestart_DEVICE_RESTART_RESTARTED {
			t.Fatalf("history = %+v, want lease %d ended as replaced (restarted)", rec.LastDisconnect, old.ack.GetLeaseId())
		}
	})
}

// TestRebootRaceUnderRandomInterleavings replays the reboot race with the old
// session's late actions (its Pong, a command result, an info update, its
// close or its timeout) scattered at random around the new Hello, on the same
// replica or another one, and checks that the final state is always right.
func TestRebootRaceUnderRandomInterleavings(t *testing.T) {
	n := 1500
	switch {
	case testing.Short():
		n = 100
	case raceDetector:
		n = 300
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < n; i++ {
		plan := newRacePlan(rng)
		ok := t.Run(fmt.Sprintf("case%d", i), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { runRace(t, plan) })
		})
		if !ok {
			t.Fatalf("plan %+v failed", plan)
		}
	}
}

type racePlan struct {
	sameReplica bool
	helloAt     time.Duration
	lateAt      [4]time.Duration // pong, command result, info update, end
	endByCut    bool             // the old connection goes silent (else the agent closes it)
}

func newRacePlan(rng *rand.Rand) racePlan {
	ms := func(max int) time.Duration { return time.Duration(rng.IntN(max)) * time.Millisecond }
	p := racePlan{sameReplica: rng.IntN(2) == 0, helloAt: ms(3000), endByCut: rng.IntN(2) == 0}
	for i := range p.lateAt {
		// Late actions land shortly before or after the new Hello.
		p.lateAt[i] = p.helloAt + ms(2000) - 800*time.Millisecond
		if p.lateAt[i] < 0 {
			p.lateAt[i] = 0
		}
	}
	// The old session's end comes after the new Hello (that is the race).
	p.lateAt[3] = p.helloAt + time.Millisecond + ms(2000)
	return p
}

func runRace(t *testing.T, p racePlan) {
	store := newStore()
	a := startReplica(t, store, testConfig("a"))
	b := a
	if !p.sameReplica {
		b = startReplica(t, store, testConfig("b"))
	}
	old := connect(t, a, "dev", "boot-1", true)
	start := time.Now()
	at := func(d time.Duration, f func()) {
		go func() { time.Sleep(d - time.Since(start)); f() }()
	}
	// One agent sends from one goroutine at a time (grpc's stream contract).
	var sendMu sync.Mutex
	send := func(m *tetherv1.ConnectRequest) { sendMu.Lock(); _ = old.stream.Send(m); sendMu.Unlock() }
	at(p.lateAt[0], func() {
		send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{Seq: 1}}})
	})
	at(p.lateAt[1], func() {
		send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: &tetherv1.CommandResult{CommandId: "x-1"}}})
	})
	at(p.lateAt[2], func() {
		send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{Info: &tetherv1.DeviceInfo{Hostname: "stale", BootId: "boot-1"}}}})
	})
	at(p.lateAt[3], func() {
		if p.endByCut {
			old.sw.Cut()
		} else {
			sendMu.Lock()
			_ = old.stream.CloseSend()
			sendMu.Unlock()
		}
	})
	time.Sleep(p.helloAt)
	fresh := connect(t, b, "dev", "boot-2", true)
	fresh.serve()
	lease2 := fresh.ack.GetLeaseId()
	for i := 0; i < 30; i++ {
		synctest.Wait()
		rec := mustGet(t, store, "dev")
		if !rec.Online() || rec.Session.Lease != lease2 {
			t.Fatalf("at +%v after Hello: record = %+v (lease 2 = %d)", time.Duration(i)*time.Second, rec, lease2)
		}
		if rec.Info.GetHostname() == "stale" {
			t.Fatalf("the old session's info update overwrote the new session's")
		}
		time.Sleep(time.Second)
	}
	if ld := mustGet(t, store, "dev").LastDisconnect; ld == nil || ld.Lease != old.ack.GetLeaseId() || ld.Reason != reasonReplaced {
		t.Fatalf("history = %+v, want lease %d ended as replaced", ld, old.ack.GetLeaseId())
	}
	fresh.cancel()
}

// TestAnEndedSessionIsRecordedAtOnceAndItsConnectionClosed: a session ended
// by the server (here kicked) while the agent keeps its stream open gets
// Close, is recorded offline at once, ignores what the agent still sends
// (a late InfoUpdate must not write the registry), and has its connection
// closed shortly after (the handler waits in Recv; closing is what ends it).
func TestAnEndedSessionIsRecordedAtOnceAndItsConnectionClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newStore()
		r := startReplica(t, store, testConfig("a"))
		d := connect(t, r, "dev-1", "boot-1", true)
		s := r.hub.Lookup("dev-1")
		if s == nil {
			t.Fatal("no session for dev-1")
		}
		s.End(tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED, "test")
		var got *tetherv1.Close
		for got == nil {
			m, err := d.stream.Recv()
			if err != nil {
				t.Fatalf("stream ended without Close: %v", err)
			}
			got = m.GetClose()
		}
		if got.GetReason() != tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED {
			t.Fatalf("Close reason %v; want KICKED", got.GetReason())
		}
		synctest.Wait()
		rec := mustGet(t, store, "dev-1")
		if rec.Online() || rec.LastDisconnect == nil || rec.LastDisconnect.Reason != tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED {
			t.Fatalf("record right after Close: online=%v last=%+v", rec.Online(), rec.LastDisconnect)
		}
		late := &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{
			Info: &tetherv1.DeviceInfo{Hostname: "late", BootId: "boot-1"}}}}
		_ = d.stream.Send(late) // may already fail: the connection is about to close
		synctest.Wait()
		if rec := mustGet(t, store, "dev-1"); rec.Online() || rec.Info.GetHostname() == "late" {
			t.Fatalf("a message after the end wrote the registry: online=%v hostname=%q", rec.Online(), rec.Info.GetHostname())
		}
		began := time.Now()
		if _, err := d.stream.Recv(); err == nil {
			t.Fatal("stream still open after Close")
		}
		// Fake time: the connection is closed at the cut delay, not a guess.
		if took := time.Since(began); took > time.Second {
			t.Fatalf("the connection was closed %v after the end; want within a second", took)
		}
		synctest.Wait()
		if n := r.hub.Len(); n != 0 {
			t.Fatalf("hub holds %d sessions after the end", n)
		}
	})
}
