package session

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// Session is one accepted agent stream. Its handler goroutine (Hub.Connect)
// owns the session's timers and decides how it ends; other goroutines talk to
// it through the methods below.
type Session struct {
	DeviceID    string
	Lease       uint64
	Mode        tetherv1.LivenessMode
	RemoteAddr  string
	ConnectedAt time.Time
	BootID      string
	// TokenID is the device token the session authenticated with ("" for a
	// certificate or dev mode); revoking it ends the session.
	TokenID string
	// TokenExpiry is when that token expires (zero: no expiry); the
	// revocation loop ends the session then.
	TokenExpiry time.Time

	hub   *Hub
	conn  *Conn // nil when the transport is not tracked
	sendQ chan *tetherv1.ConnectResponse
	done  chan struct{} // closed when the session has ended
	// recorded is closed once the end has also been written to the
	// registry (or the write failed and was queued for retry).
	recorded chan struct{}
	endReq   chan endRequest

	lastSeen atomic.Int64 // unix nanos of the last message from the agent
	lastRTT  atomic.Int64 // nanoseconds
	info     atomic.Pointer[tetherv1.DeviceInfo]
	// tokenChecked: the revocation loop has checked TokenID since the
	// session started.
	tokenChecked atomic.Bool

	// cmdMu guards the following.
	cmdMu   sync.Mutex
	cmdSeq  uint64
	pending map[string]chan *tetherv1.CommandResult
	ended   *registry.Disconnect // set once, when the session ends
}

type endRequest struct {
	reason  tetherv1.DisconnectReason
	message string
}

// LastSeen is the time of the last message from the agent.
func (s *Session) LastSeen() time.Time { return time.Unix(0, s.lastSeen.Load()) }

// LastRTT is the last measured Ping round trip.
func (s *Session) LastRTT() time.Duration { return time.Duration(s.lastRTT.Load()) }

// Info is the device info last reported on this session.
func (s *Session) Info() *tetherv1.DeviceInfo { return s.info.Load() }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Recorded is closed after Done, once the session's end has been written to
// the registry (or the write failed and was queued for retry), so that a
// caller who ended the session reads it offline.
func (s *Session) Recorded() <-chan struct{} { return s.recorded }

// End asks the session to send Close(reason) and end. It does not wait; use
// Done. Ending an ended session does nothing.
func (s *Session) End(reason tetherv1.DisconnectReason, message string) {
	select {
	case s.endReq <- endRequest{reason, message}:
	case <-s.done:
	default:
		// An end is already pending; the first reason wins.
	}
}

// Ended returns how the session ended, or nil while it is live.
func (s *Session) Ended() *registry.Disconnect {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	return s.ended
}

// Command sends a command on this session and waits for its result, for
// ctx's deadline. Errors are gRPC statuses: RESOURCE_EXHAUSTED when the
// session's in-flight cap is reached, DEADLINE_EXCEEDED when ctx ends first,
// ABORTED when the session ends first.
func (s *Session) Command(ctx context.Context, name string, args []string, timeout time.Duration) (string, *tetherv1.CommandResult, error) {
	s.cmdMu.Lock()
	if s.ended != nil {
		s.cmdMu.Unlock()
		return "", nil, s.abortedErr()
	}
	if len(s.pending) >= s.hub.cfg.MaxInflightCommands {
		s.cmdMu.Unlock()
		return "", nil, status.Errorf(codes.ResourceExhausted, "device %s already has %d commands in flight (the cap)", s.DeviceID, s.hub.cfg.MaxInflightCommands)
	}
	s.cmdSeq++
	id := strconv.FormatUint(s.Lease, 36) + "-" + strconv.FormatUint(s.cmdSeq, 10)
	ch := make(chan *tetherv1.CommandResult, 1)
	s.pending[id] = ch
	s.cmdMu.Unlock()

	forget := func() {
		s.cmdMu.Lock()
		delete(s.pending, id)
		s.cmdMu.Unlock()
	}
	msg := &tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Command{Command: &tetherv1.Command{
		CommandId: id, Name: name, Args: args, Timeout: durationpb.New(timeout),
	}}}
	select {
	case s.sendQ <- msg:
	case <-s.done:
		forget()
		return id, nil, s.abortedErr()
	case <-ctx.Done():
		forget()
		return id, nil, status.Errorf(codes.DeadlineExceeded, "command %s to device %s: not sent before the deadline", id, s.DeviceID)
	}
	select {
	case r := <-ch:
		return id, r, nil
	case <-s.done:
		forget()
		return id, nil, s.abortedErr()
	case <-ctx.Done():
		forget()
		return id, nil, status.Errorf(codes.DeadlineExceeded, "command %s to device %s: no result before the deadline", id, s.DeviceID)
	}
}

func (s *Session) abortedErr() error {
	d := s.Ended()
	if d == nil {
		return status.Errorf(codes.Aborted, "session %d of device %s ended while the command was in flight", s.Lease, s.DeviceID)
	}
	return status.Errorf(codes.Aborted, "session %d of device %s ended while the command was in flight: %s", s.Lease, s.DeviceID, reasonText(d.Reason))
}

// deliver hands a result to its waiting caller; it reports false for a
// result nobody waits for (late, or unknown id).
func (s *Session) deliver(r *tetherv1.CommandResult) bool {
	s.cmdMu.Lock()
	ch, ok := s.pending[r.GetCommandId()]
	delete(s.pending, r.GetCommandId())
	s.cmdMu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

func reasonText(r tetherv1.DisconnectReason) string {
	switch r {
	case tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED:
		return "the agent closed the connection"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT:
		return "no Pong within the ping timeout (power loss or network cut?)"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_KEEPALIVE_TIMEOUT:
		return "the HTTP/2 keepalive found the connection dead (power loss or network cut?)"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED:
		return "replaced by a newer session of the same device"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED:
		return "disconnected by an operator"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING:
		return "the server is draining"
	case tetherv1.DisconnectReason_DISCONNECT_REASON_NODE_LOST:
		return "the server node holding the session was lost"
	}
	return reasonLabel(r)
}

func reasonLabel(r tetherv1.DisconnectReason) string {
	if n, ok := tetherv1.DisconnectReason_name[int32(r)]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int32(r))
}

// inbound is one item from the receive loop.
type inbound struct {
	msg *tetherv1.ConnectRequest
	err error
}

// recvLoop is the only caller of stream.Recv.
func recvLoop(stream tetherv1.AgentService_ConnectServer, in chan<- inbound, stop <-chan struct{}) {
	for {
		m, err := stream.Recv()
		select {
		case in <- inbound{m, err}:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// run is the session's handler loop: it owns the Ping schedule and decides
// how the session ends. It returns the end to record.
func (s *Session) run(ctx context.Context, stream tetherv1.AgentService_ConnectServer, in <-chan inbound) registry.Disconnect {
	cfg := s.hub.cfg

	appPong := s.Mode == tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG
	var pingTimer, pongTimer *time.Timer
	var pingC, pongC <-chan time.Time
	var seq uint64
	var awaiting bool          // a Ping is unanswered
	var pingAt time.Time       // when it was sent
	var deferred time.Duration // how long its timeout was put off on signs of life (at most PingTimeout)
	if appPong {
		// The first Ping comes at a random point of the first interval so
		// that a reconnect storm does not ping in lockstep ever after.
		pingTimer = time.NewTimer(time.Duration(rand.Int64N(int64(cfg.PingInterval))) + 1)
		defer pingTimer.Stop()
		pingC = pingTimer.C
		pongTimer = time.NewTimer(time.Hour)
		pongTimer.Stop()
		defer pongTimer.Stop()
		pongC = pongTimer.C
	}
	// InfoUpdates beyond the session's rate wait in pendingInfo for
	// infoTimer; a newer one replaces it.
	infoRate := newInfoLimiter(time.Now())
	var pendingInfo *tetherv1.DeviceInfo
	infoTimer := time.NewTimer(time.Hour)
	infoTimer.Stop()
	defer infoTimer.Stop()

	end := s.ending
	// closeWith tells the agent why the session ends. A Send blocks only
	// while the transport's flow-control window is full, which a live agent
	// never lets happen and a dead one cannot outlast: the transport
	// keepalive (same interval and timeout) closes it, and Send returns.
	closeWith := func(reason tetherv1.DisconnectReason, msg string) registry.Disconnect {
		_ = stream.Send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: &tetherv1.Close{Reason: reason, Message: msg}}})
		return end(reason, msg)
	}

	for {
		select {
		case item := <-in:
			if item.err != nil {
				return s.transportEnd(item.err)
			}
			now := time.Now()
			s.lastSeen.Store(now.UnixNano())
			if awaiting {
				awaiting, deferred = false, 0
				pongTimer.Stop()
			}
			switch m := item.msg.Msg.(type) {
			case *tetherv1.ConnectRequest_Pong:
				if sent := m.Pong.GetPingSentAt(); sent != nil && m.Pong.GetSeq() <= seq {
					if rtt := now.Sub(sent.AsTime()); rtt >= 0 && rtt < time.Hour {
						s.lastRTT.Store(int64(rtt))
						s.hub.metrics.RTT(rtt)
					}
				}
			case *tetherv1.ConnectRequest_CommandResult:
				if !s.deliver(m.CommandResult) {
					s.hub.metrics.LateResult()
					s.hub.log.Debug("late command result dropped", "device", s.DeviceID, "lease", s.Lease, "command", m.CommandResult.GetCommandId())
				}
			case *tetherv1.ConnectRequest_InfoUpdate:
				info := m.InfoUpdate.GetInfo()
				if err := ValidateInfo(info); err != nil {
					return closeWith(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "InfoUpdate refused: "+err.Error())
				}
				if info == nil {
					break
				}
				if pendingInfo != nil {
					pendingInfo = info // the timer is armed; the newest wins
					break
				}
				if ok, wait := infoRate.take(now); ok {
					s.hub.updateInfo(ctx, s, info)
				} else {
					pendingInfo = info
					infoTimer.Reset(wait)
				}
			case *tetherv1.ConnectRequest_Hello:
				return closeWith(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "second Hello on one stream")
			default:
				return closeWith(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "empty or unknown message")
			}
		case <-pingC:
			seq++
			now := time.Now()
			ping := &tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: timestamppb.New(now)}}}
			if err := stream.Send(ping); err != nil {
				return s.transportEnd(err)
			}
			if !awaiting {
				awaiting, pingAt = true, now
				pongTimer.Reset(cfg.PingTimeout)
			}
			pingTimer.Reset(s.hub.nextPing())
		case <-pongC:
			if awaiting {
				if ev := s.signOfLife(pingAt, len(in)); ev != "" && deferred < cfg.PingTimeout {
					// The agent answered (or sent something) and this
					// server has not got to it yet: an overloaded replica
					// must not blame the device for its own lateness.
					step := max(cfg.PingTimeout/4, 50*time.Millisecond)
					deferred += step
					pongTimer.Reset(step)
					s.hub.metrics.TimeoutDeferred(ev)
					continue
				}
				s.hub.metrics.Detected(time.Since(s.LastSeen()))
				return closeWith(tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT,
					fmt.Sprintf("no message within %v of the Ping sent at %s", cfg.PingTimeout, pingAt.UTC().Format(time.RFC3339Nano)))
			}
		case <-infoTimer.C:
			if pendingInfo != nil {
				infoRate.take(time.Now())
				s.hub.updateInfo(ctx, s, pendingInfo)
				pendingInfo = nil
			}
		case r := <-s.endReq:
			return closeWith(r.reason, r.message)
		case m := <-s.sendQ:
			if err := stream.Send(m); err != nil {
				return s.transportEnd(err)
			}
		case <-ctx.Done():
			return s.transportEnd(ctx.Err())
		}
	}
}

// signOfLife reports why the agent cannot be called silent since pingAt,
// or "" when it can: a message is already queued for the handler
// ("queued"), bytes arrived on the connection after the Ping ("read"), or
// the kernel holds bytes nobody has read yet ("kernel"). Only when none of
// these holds does a ping timeout end the session.
func (s *Session) signOfLife(pingAt time.Time, queued int) string {
	switch {
	case queued > 0:
		return "queued"
	case s.conn == nil:
		return ""
	case s.conn.LastRead().After(pingAt):
		return "read"
	case s.conn.Unread() > 0:
		return "kernel"
	}
	return ""
}

// ending is the record of this session ending now for reason.
func (s *Session) ending(reason tetherv1.DisconnectReason, msg string) registry.Disconnect {
	return registry.Disconnect{Lease: s.Lease, Node: s.hub.cfg.Node, Reason: reason, Time: time.Now(), Message: msg}
}

// transportEnd attributes an end that the stream reported rather than one the
// session decided.
func (s *Session) transportEnd(err error) registry.Disconnect {
	end := s.ending
	if err == io.EOF {
		return end(tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED, "the agent closed the stream")
	}
	if s.hub.isDraining() {
		return end(tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING, "the server is shutting down")
	}
	if c := s.conn; c != nil && c.ClosedByUs() {
		// This server closed the transport without the session asking:
		// that is HTTP/2 keepalive enforcement.
		last := c.LastRead()
		s.hub.metrics.Detected(time.Since(last))
		if s.Mode == tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG {
			// The transport can only go silent this long if the Pongs
			// stopped too: the application timeout was due within
			// PingInterval*jitter of this moment, and a busy scheduler let
			// the keepalive win the race. The device is what went silent.
			return end(tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT,
				fmt.Sprintf("no Pong and no other traffic since %s (the transport keepalive closed the connection first)", last.UTC().Format(time.RFC3339Nano)))
		}
		return end(tetherv1.DisconnectReason_DISCONNECT_REASON_KEEPALIVE_TIMEOUT,
			fmt.Sprintf("transport silent since %s", last.UTC().Format(time.RFC3339Nano)))
	}
	msg := "the agent closed the connection"
	if st, ok := status.FromError(err); ok && st.Code() != codes.Canceled {
		msg = st.Message()
	}
	return end(tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED, msg)
}
