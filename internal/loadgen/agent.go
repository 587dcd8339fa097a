package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether/agent/backoff"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Reconnect schedule: small, jittered, and reset after a session that stayed
// up for stableAfter.
const (
	reconnectInitial = 250 * time.Millisecond
	reconnectMax     = 5 * time.Second
	reconnectMin     = 50 * time.Millisecond
	stableAfter      = 10 * time.Second
	// maxRetryAfter caps a Close's retry_after hint.
	maxRetryAfter = time.Minute
)

var (
	errConnectTimeout = errors.New("no HelloAck within the dial timeout")
	errNotHelloAck    = errors.New("protocol error: first message is not HelloAck")
)

var (
	capsPong   = []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG, tetherv1.Capability_CAPABILITY_COMMANDS}
	capsLegacy = []tetherv1.Capability{tetherv1.Capability_CAPABILITY_COMMANDS}
)

// agent is one simulated device. Its fields other than connected are owned
// by its goroutine.
type agent struct {
	r      *runner
	id     string
	legacy bool
	server int // index into runner.targets; moves on after a failure
	source int // index into runner.dialOpts
	// connected is read by the command driver.
	connected atomic.Bool
	// everUp is set after the first HelloAck.
	everUp bool
}

// sessionEnd says how one attempt ended.
type sessionEnd struct {
	up         time.Duration // how long the session was up; 0 = never acked
	retryAfter time.Duration // the Close's hint
	moveOn     bool          // try the next replica
}

// run is the agent's goroutine: connect, serve the session, and reconnect
// until ctx ends (or after the first end when Reconnect is off).
func (a *agent) run(ctx context.Context) {
	var bo *backoff.Backoff
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for ctx.Err() == nil {
		end := a.session(ctx)
		if ctx.Err() != nil || !a.r.cfg.Reconnect {
			return
		}
		if bo == nil {
			bo = backoff.New(backoff.Config{Initial: reconnectInitial, Max: reconnectMax, Min: reconnectMin})
		}
		if end.up >= stableAfter {
			bo.Reset()
		}
		d := max(bo.Next(), min(end.retryAfter, maxRetryAfter))
		if end.moveOn && len(a.r.targets) > 1 {
			a.server = (a.server + 1) % len(a.r.targets)
		}
		if t == nil {
			t = time.NewTimer(d)
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// session runs one connection attempt and, once acked, the session. Only
// this goroutine sends on the stream; the connection and the stream are
// closed when it returns.
func (a *agent) session(ctx context.Context) (end sessionEnd) {
	r := a.r
	st := r.st
	if !r.acquireDial(ctx) {
		return sessionEnd{}
	}
	dialing := true
	defer func() {
		if dialing {
			r.releaseDial()
		}
	}()
	st.attempts.Add(1)
	fail := func(key string, err error) sessionEnd {
		if !r.stopping.Load() {
			st.connectFailed(key, err)
		}
		return sessionEnd{moveOn: true}
	}

	conn, err := grpc.NewClient(r.targets[a.server], r.dialOpts[a.source]...)
	if err != nil {
		return fail(codeKey(err), err)
	}
	defer conn.Close()
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(r.cfg.DialTimeout, func() { cancel(errConnectTimeout) })
	failed := func(err error) sessionEnd {
		timer.Stop()
		if errors.Is(context.Cause(sctx), errConnectTimeout) {
			return fail("DeadlineExceeded", fmt.Errorf("%w (%v)", errConnectTimeout, err))
		}
		return fail(codeKey(err), err)
	}

	stream, err := tetherv1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return failed(err)
	}
	caps := capsPong
	if a.legacy {
		caps = capsLegacy
	}
	hello := &tetherv1.Hello{DeviceId: a.id, AgentVersion: r.cfg.AgentVersion, Capabilities: caps, Info: r.info}
	if err := stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: hello}}); err != nil {
		if errors.Is(err, io.EOF) { // the real status comes from Recv
			_, err = stream.Recv()
		}
		return failed(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return failed(err)
	}
	if c := first.GetClose(); c != nil {
		timer.Stop()
		return fail(reasonKey(c.GetReason()), fmt.Errorf("server sent Close before HelloAck: %s %s", c.GetReason(), c.GetMessage()))
	}
	if first.GetHelloAck() == nil {
		return failed(fmt.Errorf("%w: %T", errNotHelloAck, first.GetMsg()))
	}
	if !timer.Stop() {
		return failed(errConnectTimeout) // it fired as the ack arrived
	}
	dialing = false
	r.releaseDial()

	st.sessionUp(!a.everUp)
	a.everUp = true
	a.connected.Store(true)
	began := time.Now()
	defer func() {
		a.connected.Store(false)
		st.connected.Add(-1)
		end.up = max(time.Since(began), time.Nanosecond)
	}()

	for {
		msg, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil && !r.stopping.Load() {
				st.sessionBroke(codeKey(err), err)
			}
			return sessionEnd{moveOn: true}
		}
		switch m := msg.GetMsg().(type) {
		case *tetherv1.ConnectResponse_Ping:
			if a.legacy {
				st.pingsIgnored.Add(1)
				continue
			}
			err = stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{
				Seq: m.Ping.GetSeq(), PingSentAt: m.Ping.GetSentAt(), ReceivedAt: timestamppb.Now(),
			}}})
			if err == nil {
				st.pingsAnswered.Add(1)
			}
		case *tetherv1.ConnectResponse_Command:
			err = stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: runCommand(m.Command)}})
			if err == nil {
				st.commandsAnswered.Add(1)
			}
		case *tetherv1.ConnectResponse_Close:
			if !r.stopping.Load() {
				st.sessionClosed(m.Close)
			}
			reason := m.Close.GetReason()
			return sessionEnd{
				retryAfter: m.Close.GetRetryAfter().AsDuration(),
				moveOn:     reason == tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING || reason == tetherv1.DisconnectReason_DISCONNECT_REASON_NODE_LOST,
			}
		}
		// A failed Send is followed by a failed Recv with the stream's
		// status, which ends the loop above.
	}
}

// runCommand answers the built-in commands: "echo" returns its arguments
// joined by spaces; anything else is refused like an agent refuses a
// command outside its allow-list.
func runCommand(c *tetherv1.Command) *tetherv1.CommandResult {
	res := &tetherv1.CommandResult{CommandId: c.GetCommandId(), Duration: durationpb.New(0)}
	switch c.GetName() {
	case "echo":
		res.Output = strings.Join(c.GetArgs(), " ")
	default:
		res.ExitCode = 127
		res.Error = fmt.Sprintf("command %q is not allowed (the load generator only runs echo)", c.GetName())
	}
	return res
}
