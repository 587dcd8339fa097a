package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/logging"
)

// errHelloTimeout ends an attempt that did not get a HelloAck in time.
var errHelloTimeout = errors.New("no HelloAck within the hello timeout")

// sessionEnd says how one connection attempt or session ended.
type sessionEnd struct {
	acked  bool            // a HelloAck arrived
	lease  uint64          // its lease id
	lasted time.Duration   // from HelloAck to the end
	close  *tetherv1.Close // the server's Close, when it sent one
	err    error           // the error that ended it otherwise
}

// reason is the word for how it ended, in the vocabulary the server's logs
// use (logging.Reason): the server's Close reason ("draining",
// "replaced", ...); "hello_timeout", "auth_failed", "unavailable" or
// "error" for an end without a Close.
func (e sessionEnd) reason() string {
	if e.close != nil {
		return logging.Reason(e.close.GetReason())
	}
	switch {
	case e.err == nil:
		return "ended"
	case errors.Is(e.err, errHelloTimeout):
		return "hello_timeout"
	}
	switch status.Code(e.err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return "auth_failed"
	case codes.Unavailable:
		return "unavailable"
	case codes.ResourceExhausted:
		return "resource_exhausted"
	}
	return "error"
}

// detail is the human part: the Close message or the error.
func (e sessionEnd) detail() string {
	if e.close != nil {
		return e.close.GetMessage()
	}
	if e.err != nil {
		return e.err.Error()
	}
	return ""
}

// inbound is one result of stream.Recv.
type inbound struct {
	msg *tetherv1.ConnectResponse
	err error
}

// session is one stream's state, owned by Agent.session's goroutine except
// where noted.
type session struct {
	a      *Agent
	ctx    context.Context // ends with the session; commands run under it
	sendQ  chan *tetherv1.ConnectRequest
	cmdSem chan struct{}
	wg     *sync.WaitGroup
	// dropped counts messages dropped because sendQ was full.
	dropped int
}

// session runs one connection attempt and, when the server accepts it, the
// session, until it ends. Every goroutine it starts has finished when it
// returns.
func (a *Agent) session(ctx context.Context, addr string, watchdog <-chan time.Time) (end sessionEnd) {
	a.status("connecting to " + addr)
	conn, err := grpc.NewClient(addr, a.dial[addr]...)
	if err != nil {
		return sessionEnd{err: fmt.Errorf("dial: %w", err)}
	}
	defer conn.Close()

	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel(nil)
		wg.Wait()
	}()
	// The whole handshake, from opening the stream to HelloAck, is bounded.
	handshake := time.AfterFunc(a.cfg.HelloTimeout, func() { cancel(errHelloTimeout) })
	defer handshake.Stop()
	failed := func(err error) sessionEnd {
		if c := context.Cause(sctx); c != nil && ctx.Err() == nil {
			err = c
		}
		return sessionEnd{err: err}
	}

	hello := &tetherv1.Hello{
		DeviceId:     a.cfg.DeviceID,
		AgentVersion: a.cfg.Version,
		Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_COMMANDS},
		Info:         a.deviceInfo(),
	}
	if !a.cfg.LegacyNoPong {
		hello.Capabilities = append(hello.Capabilities, tetherv1.Capability_CAPABILITY_PONG)
	}
	stream, err := tetherv1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return failed(fmt.Errorf("open stream: %w", err))
	}
	s := &session{
		a: a, ctx: sctx, wg: &wg,
		sendQ:  make(chan *tetherv1.ConnectRequest, sendQueueSize),
		cmdSem: make(chan struct{}, maxRunningCommands),
	}
	in := make(chan inbound)
	sendErr := make(chan error, 1)
	wg.Go(func() { recvLoop(sctx, stream, in) })
	wg.Go(func() { sendLoop(sctx, stream, s.sendQ, sendErr) })
	s.sendQ <- &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: hello}}

	// Wait for HelloAck.
	var ack *tetherv1.HelloAck
	for ack == nil {
		select {
		case it := <-in:
			if it.err != nil {
				return failed(fmt.Errorf("waiting for HelloAck: %w", it.err))
			}
			switch m := it.msg.GetMsg().(type) {
			case *tetherv1.ConnectResponse_HelloAck:
				ack = m.HelloAck
			case *tetherv1.ConnectResponse_Close:
				return sessionEnd{close: m.Close}
			default:
				return sessionEnd{err: fmt.Errorf("protocol error: first message is %T, want HelloAck", m)}
			}
		case err := <-sendErr:
			return failed(fmt.Errorf("sending Hello: %w", err))
		case <-watchdog:
			a.notifyWatchdog()
		case <-sctx.Done():
			return failed(context.Cause(sctx))
		}
	}
	if !handshake.Stop() {
		return sessionEnd{err: errHelloTimeout} // it fired as the ack arrived
	}

	start := time.Now()
	end = sessionEnd{acked: true, lease: ack.GetLeaseId()}
	defer func() { end.lasted = time.Since(start) }()
	a.log.Info("session started", "server", addr, "lease", ack.GetLeaseId(), "node", ack.GetServerNode(),
		"mode", logging.Mode(ack.GetLivenessMode()), "ping_interval", ack.GetPingInterval().AsDuration(), "ping_timeout", ack.GetPingTimeout().AsDuration())
	a.status(fmt.Sprintf("connected to %s (node %s, lease %d)", addr, ack.GetServerNode(), ack.GetLeaseId()))
	if a.cfg.OnSession != nil {
		a.cfg.OnSession(ack.GetLeaseId())
	}

	lastInfo := hello.GetInfo()
	infoTick := time.NewTicker(a.cfg.InfoInterval)
	defer infoTick.Stop()
	for {
		select {
		case it := <-in:
			if it.err != nil {
				end.err = it.err
				return end
			}
			if c := s.handle(it.msg); c != nil {
				end.close = c
				return end
			}
		case err := <-sendErr:
			end.err = fmt.Errorf("send: %w", err)
			return end
		case <-infoTick.C:
			if info := a.deviceInfo(); info != nil && !proto.Equal(info, lastInfo) {
				if s.trySend(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_InfoUpdate{InfoUpdate: &tetherv1.InfoUpdate{Info: info}}}) {
					a.log.Info("device info changed", "lease", end.lease)
					lastInfo = info
				}
			}
		case <-watchdog:
			a.notifyWatchdog()
		case <-sctx.Done():
			end.err = context.Cause(sctx)
			return end
		}
	}
}

// handle acts on one server message; it returns the Close that ends the
// session, if it is one.
func (s *session) handle(m *tetherv1.ConnectResponse) *tetherv1.Close {
	switch m := m.GetMsg().(type) {
	case *tetherv1.ConnectResponse_Ping:
		if s.a.cfg.LegacyNoPong {
			return nil // an old agent ignores Pings
		}
		s.trySend(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Pong{Pong: &tetherv1.Pong{
			Seq: m.Ping.GetSeq(), PingSentAt: m.Ping.GetSentAt(), ReceivedAt: timestamppb.Now(),
		}}})
	case *tetherv1.ConnectResponse_Command:
		s.startCommand(m.Command)
	case *tetherv1.ConnectResponse_Close:
		return m.Close
	case *tetherv1.ConnectResponse_HelloAck:
		s.a.log.Warn("second HelloAck ignored", "lease", m.HelloAck.GetLeaseId())
	default:
		s.a.log.Debug("unknown message from the server ignored", "type", fmt.Sprintf("%T", m))
	}
	return nil
}

// trySend queues m without blocking; a full queue means the transport is
// stuck, and the message is dropped (the server's Ping deadline or the
// keepalive then decides). It reports whether m was queued.
func (s *session) trySend(m *tetherv1.ConnectRequest) bool {
	select {
	case s.sendQ <- m:
		return true
	default:
		s.dropped++
		s.a.log.Warn("send queue full; message dropped", "type", fmt.Sprintf("%T", m.GetMsg()), "dropped", s.dropped)
		return false
	}
}

// startCommand runs c in its own goroutine; its result goes through the
// send loop. Beyond maxRunningCommands, c is refused at once.
func (s *session) startCommand(c *tetherv1.Command) {
	select {
	case s.cmdSem <- struct{}{}:
	default:
		s.trySend(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: &tetherv1.CommandResult{
			CommandId: c.GetCommandId(), ExitCode: -1,
			Error: fmt.Sprintf("agent busy: %d commands already running", maxRunningCommands),
		}}})
		return
	}
	log := s.a.log
	s.wg.Go(func() {
		defer func() { <-s.cmdSem }()
		res := s.a.runner.Run(s.ctx, c)
		log.Info("command", "id", c.GetCommandId(), "name", c.GetName(), "exit_code", res.GetExitCode(),
			"duration", res.GetDuration().AsDuration(), "error", res.GetError())
		select {
		case s.sendQ <- &tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_CommandResult{CommandResult: res}}:
		case <-s.ctx.Done():
		}
	})
}

// recvLoop is the only caller of stream.Recv. It ends at the first error or
// when ctx ends.
func recvLoop(ctx context.Context, stream tetherv1.AgentService_ConnectClient, in chan<- inbound) {
	for {
		m, err := stream.Recv()
		select {
		case in <- inbound{m, err}:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// sendLoop is the only caller of stream.Send. It ends at the first error or
// when ctx ends. io.EOF from Send means the stream has ended and Recv holds
// the real outcome (perhaps a Close still in flight), so it is left to the
// receive loop; other errors are reported on errc.
func sendLoop(ctx context.Context, stream tetherv1.AgentService_ConnectClient, q <-chan *tetherv1.ConnectRequest, errc chan<- error) {
	for {
		select {
		case m := <-q:
			if err := stream.Send(m); err != nil {
				if !errors.Is(err, io.EOF) {
					errc <- err
				}
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
