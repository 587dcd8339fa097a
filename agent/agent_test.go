package agent

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

const (
	replaced = tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED
	draining = tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING
	flapping = tetherv1.DisconnectReason_DISCONNECT_REASON_FLAPPING
	kicked   = tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED
)

// floor is the smallest backoff delay with the default config (a tenth of
// the 1s initial ceiling).
const floor = 100 * time.Millisecond

func TestHelloCarriesIdentityCapabilitiesAndInfo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "kiosk-7", Labels: map[string]string{"site": "lobby"}})
		c := h.conn()
		hello := c.hello
		if hello.GetDeviceId() != "kiosk-7" || hello.GetAgentVersion() != "v0.0.0-test" {
			t.Fatalf("hello = %v", hello)
		}
		if caps := hello.GetCapabilities(); !slices.Contains(caps, tetherv1.Capability_CAPABILITY_PONG) || !slices.Contains(caps, tetherv1.Capability_CAPABILITY_COMMANDS) {
			t.Fatalf("capabilities = %v, want PONG and COMMANDS", caps)
		}
		info := hello.GetInfo()
		if info.GetMac() != "aa:bb:cc:dd:ee:ff" || info.GetHostname() != "box-1" || info.GetBootId() != "boot-1" ||
			info.GetLabels()["site"] != "lobby" || info.GetAgentVersion() != "v0.0.0-test" || len(info.GetIpAddresses()) != 1 {
			t.Fatalf("info = %v", info)
		}
	})
}

func TestDefaultDeviceIDIsThePrimaryMACWithDashes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{})
		if got := h.conn().hello.GetDeviceId(); got != "aa-bb-cc-dd-ee-ff" {
			t.Fatalf("device id = %q", got)
		}
	})
}

func TestNewFailsWithoutAnIDOrAMAC(t *testing.T) {
	_, err := New(Config{ServerAddr: "127.0.0.1:1", InfoSource: func() (*tetherv1.DeviceInfo, error) {
		return &tetherv1.DeviceInfo{Hostname: "x"}, nil
	}})
	if err == nil || !strings.Contains(err.Error(), "--device-id") {
		t.Fatalf("err = %v, want a hint to set --device-id", err)
	}
}

func TestPingIsAnsweredWithAPongEchoingSeqAndSentAt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.ack(1)
		for _, seq := range []uint64{1, 2, 7} {
			sent := timestamppb.New(time.Now().Add(-time.Second))
			c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: sent}}})
			pong := c.next().GetPong()
			if pong.GetSeq() != seq || !pong.GetPingSentAt().AsTime().Equal(sent.AsTime()) {
				t.Fatalf("pong = %v, want seq %d echoing %v", pong, seq, sent.AsTime())
			}
			if !pong.GetReceivedAt().AsTime().Equal(time.Now()) {
				t.Fatalf("received_at = %v, want the agent's clock now (%v)", pong.GetReceivedAt().AsTime(), time.Now())
			}
		}
	})
}

func TestLegacyAgentNeverPongsAndDoesNotAdvertisePong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "old-1", LegacyNoPong: true})
		c := h.conn()
		if caps := c.hello.GetCapabilities(); slices.Contains(caps, tetherv1.Capability_CAPABILITY_PONG) || !slices.Contains(caps, tetherv1.Capability_CAPABILITY_COMMANDS) {
			t.Fatalf("capabilities = %v, want COMMANDS without PONG", caps)
		}
		c.ack(1)
		for seq := uint64(1); seq <= 5; seq++ {
			c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: timestamppb.Now()}}})
			time.Sleep(10 * time.Second)
		}
		// A command after the Pings: its result must be the first thing the
		// agent sends, so no Pong was queued before it.
		c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{CommandId: "x", Name: "echo"}}})
		if m := c.next(); m.GetCommandResult().GetCommandId() != "x" {
			t.Fatalf("first message after the Pings = %v, want the command result", m)
		}
	})
}

func TestEchoCommandRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.ack(1)
		c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{
			CommandId: "c-1", Name: "echo", Args: []string{"hello", "$(id)"}, Timeout: durationpb.New(5 * time.Second),
		}}})
		r := c.next().GetCommandResult()
		if r.GetCommandId() != "c-1" || r.GetOutput() != "hello $(id)\n" || r.GetExitCode() != 0 || r.GetError() != "" {
			t.Fatalf("result = %v", r)
		}
	})
}

func TestInfoCommandReportsLabelsAndVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1", Labels: map[string]string{"role": "kiosk"}})
		c := h.conn()
		c.ack(1)
		c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{CommandId: "i", Name: "info"}}})
		var got struct {
			Hostname     string            `json:"hostname"`
			Labels       map[string]string `json:"labels"`
			AgentVersion string            `json:"agentVersion"`
		}
		r := c.next().GetCommandResult()
		if err := json.Unmarshal([]byte(r.GetOutput()), &got); err != nil {
			t.Fatalf("info output %q: %v", r.GetOutput(), err)
		}
		if got.Hostname != "box-1" || got.Labels["role"] != "kiosk" || got.AgentVersion != "v0.0.0-test" {
			t.Fatalf("info = %+v", got)
		}
	})
}

func TestUnknownCommandGetsAnErrorResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.ack(1)
		c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{CommandId: "c-2", Name: "reboot"}}})
		r := c.next().GetCommandResult()
		if r.GetCommandId() != "c-2" || r.GetExitCode() != -1 || r.GetError() != `unknown command "reboot"; allowed: echo, info` {
			t.Fatalf("result = %v", r)
		}
		// The session goes on.
		c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: 1}}})
		if c.next().GetPong().GetSeq() != 1 {
			t.Fatal("no Pong after the refused command")
		}
	})
}

func TestReconnectsWithGrowingJitteredBackoffAfterTheServerEndsTheStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		ceilings := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
		c := h.conn()
		for i, ceiling := range ceilings {
			ceiling *= time.Second
			c.ack(uint64(i + 1))
			c.finish(nil) // the stream ends without a Close
			next := h.conn()
			if d := next.at.Sub(c.endAt); d < floor || d >= ceiling {
				t.Fatalf("reconnect %d after %v, want within [%v, %v)", i+1, d, floor, ceiling)
			}
			c = next
		}
	})
}

func TestAStableSessionResetsTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		for i := 0; i < 5; i++ { // short sessions: the ceiling climbs to 32s
			c.ack(uint64(i + 1))
			c.finish(nil)
			c = h.conn()
		}
		c.ack(10)
		time.Sleep(DefaultStableAfter)
		c.finish(nil)
		next := h.conn()
		if d := next.at.Sub(c.endAt); d >= time.Second {
			t.Fatalf("reconnect after a stable session took %v, want under the initial 1s ceiling", d)
		}
	})
}

func TestConnectFailuresBackOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		// The server refuses every stream before HelloAck with an error.
		var last time.Time
		for i, ceiling := range []time.Duration{1, 2, 4} {
			c := h.conn()
			if i > 0 {
				if d := c.at.Sub(last); d < floor || d >= ceiling*time.Second {
					t.Fatalf("attempt %d after %v, want within [%v, %v)", i+1, d, floor, ceiling*time.Second)
				}
			}
			c.finish(context.DeadlineExceeded)
			last = c.endAt
		}
	})
}

func TestHelloTimeoutAbandonsAnUnansweredStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1", HelloTimeout: 3 * time.Second})
		c := h.conn() // never acked
		<-c.ended
		if d := c.endAt.Sub(c.at); d != 3*time.Second {
			t.Fatalf("the agent gave up after %v, want the 3s hello timeout", d)
		}
		next := h.conn()
		if d := next.at.Sub(c.endAt); d < floor || d >= time.Second {
			t.Fatalf("retry after %v, want a first backoff", d)
		}
	})
}

func TestDrainingBacksOffHonouringRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.ack(1)
		c.close(draining, 20*time.Second)
		next := h.conn()
		if d := next.at.Sub(c.endAt); d < 20*time.Second || d >= 21*time.Second {
			t.Fatalf("reconnect %v after DRAINING with retry_after 20s, want within [20s, 21s)", d)
		}
		// Without a hint: plain backoff, never at once.
		next.ack(2)
		next.close(draining, 0)
		third := h.conn()
		if d := third.at.Sub(next.endAt); d < floor || d >= 2*time.Second {
			t.Fatalf("reconnect %v after DRAINING, want within [%v, 2s)", d, floor)
		}
	})
}

func TestOverloadedWaitsRetryAfterPlusJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.close(tetherv1.DisconnectReason_DISCONNECT_REASON_OVERLOADED, 4*time.Second)
		next := h.conn()
		if d := next.at.Sub(c.endAt); d < 4*time.Second || d >= 6*time.Second {
			t.Fatalf("reconnect %v after OVERLOADED with retry_after 4s, want within [4s, 6s)", d)
		}
	})
}

func TestReplacedReconnectsAtOnceButBacksOffWhenItFlaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "dup"})
		c := h.conn()
		c.ack(1)
		c.close(replaced, 0)
		second := h.conn()
		if d := second.at.Sub(c.endAt); d != 0 {
			t.Fatalf("first REPLACED: reconnect after %v, want at once", d)
		}
		second.ack(2)
		time.Sleep(5 * time.Second)
		second.close(replaced, 0) // again within a minute: a duplicate-id fight
		third := h.conn()
		if d := third.at.Sub(second.endAt); d < floor || d >= time.Second {
			t.Fatalf("second REPLACED within a minute: reconnect after %v, want a backoff within [%v, 1s)", d, floor)
		}
		third.ack(3)
		third.close(replaced, 0)
		fourth := h.conn()
		if d := fourth.at.Sub(third.endAt); d < floor || d >= 2*time.Second {
			t.Fatalf("third REPLACED: reconnect after %v, want a growing backoff", d)
		}
		// A minute later the window has passed: at once again.
		fourth.ack(4)
		time.Sleep(2 * time.Minute)
		fourth.close(replaced, 0)
		if d := h.conn().at.Sub(fourth.endAt); d != 0 {
			t.Fatalf("REPLACED after a quiet minute: reconnect after %v, want at once", d)
		}
	})
}

func TestFlappingAndAuthFailuresBackOffLong(t *testing.T) {
	for _, reason := range []tetherv1.DisconnectReason{flapping, tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_FAILED, tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED} {
		t.Run(reason.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := startAgent(t, Config{DeviceID: "d1"})
				c := h.conn()
				c.ack(1)
				c.close(reason, 0)
				if d := h.conn().at.Sub(c.endAt); d < 30*time.Second || d >= 60*time.Second {
					t.Fatalf("reconnect after %v, want within [30s, 60s)", d)
				}
			})
		})
	}
}

func TestUnauthenticatedStreamsBackOffLong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.finish(status.Error(codes.Unauthenticated, "bad credentials"))
		if d := h.conn().at.Sub(c.endAt); d < 30*time.Second || d >= 60*time.Second {
			t.Fatalf("reconnect after Unauthenticated took %v, want within [30s, 60s)", d)
		}
	})
}

func TestOtherClosesUseNormalBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1"})
		c := h.conn()
		c.ack(1)
		c.close(kicked, 0)
		if d := h.conn().at.Sub(c.endAt); d < floor || d >= time.Second {
			t.Fatalf("reconnect after KICKED took %v, want within [%v, 1s)", d, floor)
		}
	})
}

func TestInfoUpdateIsSentOnlyWhenTheInfoChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startAgent(t, Config{DeviceID: "d1", InfoInterval: 10 * time.Second})
		c := h.conn()
		c.ack(1)
		time.Sleep(35 * time.Second) // three rechecks, nothing changed
		synctest.Wait()
		select {
		case m, ok := <-c.recv:
			t.Fatalf("sent %v (stream open: %v) although the info did not change", m, ok)
		default:
		}
		h.info.setHostname("box-2")
		changed := time.Now()
		u := c.next().GetInfoUpdate()
		if u.GetInfo().GetHostname() != "box-2" || u.GetInfo().GetAgentVersion() != "v0.0.0-test" || u.GetInfo().GetMac() != "aa:bb:cc:dd:ee:ff" {
			t.Fatalf("info update = %v", u)
		}
		if d := time.Since(changed); d > 10*time.Second {
			t.Fatalf("update %v after the change, want within the 10s interval", d)
		}
		time.Sleep(25 * time.Second)
		synctest.Wait()
		select {
		case m, ok := <-c.recv:
			t.Fatalf("sent %v (stream open: %v) again for the same change", m, ok)
		default:
		}
	})
}

func TestCancelEndsRunPromptly(t *testing.T) {
	t.Run("during a session", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startAgent(t, Config{DeviceID: "d1"})
			c := h.conn()
			c.ack(1)
			c.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: 1}}})
			c.next()
			at := time.Now()
			h.stop()
			if d := time.Since(at); d != 0 {
				t.Fatalf("Run took %v (fake time) to return", d)
			}
			<-c.ended // the server saw the stream end
		})
	})
	t.Run("during a long backoff", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startAgent(t, Config{DeviceID: "d1"})
			c := h.conn()
			c.ack(1)
			c.close(draining, 10*time.Minute)
			time.Sleep(time.Minute)
			at := time.Now()
			h.stop()
			if d := time.Since(at); d != 0 {
				t.Fatalf("Run took %v (fake time) to return", d)
			}
		})
	})
	t.Run("while waiting for HelloAck", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := startAgent(t, Config{DeviceID: "d1"})
			h.conn()
			at := time.Now()
			h.stop()
			if d := time.Since(at); d != 0 {
				t.Fatalf("Run took %v (fake time) to return", d)
			}
		})
	})
}

// fakeNotifier records what the agent reports.
type fakeNotifier struct {
	mu        sync.Mutex
	statuses  []string
	watchdogs []time.Time
}

func (n *fakeNotifier) Status(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.statuses = append(n.statuses, s)
	return nil
}

func (n *fakeNotifier) Watchdog() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.watchdogs = append(n.watchdogs, time.Now())
	return nil
}

func (n *fakeNotifier) WatchdogInterval() time.Duration { return 15 * time.Second }

func TestWatchdogAndStatusComeFromTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &fakeNotifier{}
		var leases []uint64
		h := startAgent(t, Config{DeviceID: "d1", Notifier: n, OnSession: func(l uint64) { leases = append(leases, l) }})
		start := time.Now()
		c := h.conn()
		c.ack(42)
		time.Sleep(time.Minute) // connected
		c.close(draining, 5*time.Minute)
		time.Sleep(time.Minute) // backing off
		h.stop()

		n.mu.Lock()
		defer n.mu.Unlock()
		// One at start, then every 15s for two minutes, connected or not.
		if len(n.watchdogs) < 8 {
			t.Fatalf("%d watchdog pings in 2m, want at least 8: %v", len(n.watchdogs), n.watchdogs)
		}
		for i := 1; i < len(n.watchdogs); i++ {
			if gap := n.watchdogs[i].Sub(n.watchdogs[i-1]); gap > 15*time.Second {
				t.Fatalf("watchdog gap %v at %v, want at most 15s", gap, n.watchdogs[i].Sub(start))
			}
		}
		joined := strings.Join(n.statuses, "\n")
		for _, want := range []string{"connecting to passthrough:///bufnet", "connected to passthrough:///bufnet (node fake, lease 42)", "disconnected from", "(draining)", "stopping"} {
			if !strings.Contains(joined, want) {
				t.Errorf("statuses lack %q:\n%s", want, joined)
			}
		}
		if !slices.Equal(leases, []uint64{42}) {
			t.Errorf("OnSession saw %v, want [42]", leases)
		}
	})
}

// TestKeepaliveNeverEarnsTooManyPings keeps an idle session open for an hour
// against a server enforcing the real policy (MinTime 10s, no pings without
// a stream): a GOAWAY too_many_pings would end the stream.
func TestKeepaliveNeverEarnsTooManyPings(t *testing.T) {
	ka := ClientKeepalive()
	if ka.Time < 2*serverMinPingTime || ka.PermitWithoutStream || ka.Timeout <= 0 || ka.Timeout >= ka.Time {
		t.Fatalf("client keepalive %+v does not fit the server's MinTime %v", ka, serverMinPingTime)
	}
	for _, legacy := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			h := startAgent(t, Config{DeviceID: "idle", LegacyNoPong: legacy})
			c := h.conn()
			c.ack(1)
			time.Sleep(time.Hour)
			synctest.Wait()
			select {
			case <-c.ended:
				t.Fatalf("legacy=%v: the session ended while idle", legacy)
			case m, ok := <-c.recv:
				t.Fatalf("legacy=%v: unexpected %v (stream open: %v)", legacy, m, ok)
			default:
			}
			select {
			case extra := <-h.srv.conns:
				t.Fatalf("legacy=%v: the agent reconnected at %v", legacy, extra.at)
			default:
			}
		})
	}
}
