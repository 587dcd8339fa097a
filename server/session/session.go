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
// is the only reader of the stream: it handles each agent message as it
// arrives. Everything else happens in short callbacks — the Ping schedule
// and the ping timeout are timers, a command is sent by its caller — so a
// held session costs one goroutine. A session that must end while its
// handler waits in Recv is ended by telling the agent (Close, after which a
// live agent closes the stream) and, if it does not, by closing its
// connection; a dead agent's connection is closed at once.
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

	hub    *Hub
	conn   *Conn // nil when the transport is not tracked
	stream tetherv1.AgentService_ConnectServer
	done   chan struct{} // closed when the session has ended
	// recorded is closed once the end has also been written to the
	// registry (or the write failed and was queued for retry).
	recorded chan struct{}
	// acked is closed once HelloAck is on the stream: nothing else may be
	// sent before it.
	acked chan struct{}

	// sendMu serialises Send (grpc-go allows one sender at a time);
	// sendShut is set under it once the handler has returned.
	sendMu   sync.Mutex
	sendShut bool

	lastSeen atomic.Int64 // unix nanos of the last message from the agent
	lastRTT  atomic.Int64 // nanoseconds
	info     atomic.Pointer[tetherv1.DeviceInfo]
	// tokenChecked: the revocation loop has checked TokenID since the
	// session started.
	tokenChecked atomic.Bool

	// mu guards the liveness state and the end decision.
	mu          sync.Mutex
	running     bool                 // the handler has started its read loop
	finished    bool                 // the handler has returned
	decided     *registry.Disconnect // how the session ends, once decided (first wins)
	seq         uint64
	awaiting    bool          // a Ping is unanswered
	pingAt      time.Time     // when it was sent
	deferred    time.Duration // how long its timeout was put off on signs of life (at most PingTimeout)
	pingTimer   *time.Timer
	pongTimer   *time.Timer
	infoTimer   *time.Timer
	pendingInfo *tetherv1.DeviceInfo // an InfoUpdate beyond the rate, waiting for infoTimer
	infoRate    *infoLimiter
	cutTimer    *time.Timer // closes the connection when the session ended while its handler waits in Recv
	closeOnce   sync.Once   // Hub.close runs once, by whoever ended the session

	// cmdMu guards the following.
	cmdMu   sync.Mutex
	cmdSeq  uint64
	pending map[string]chan *tetherv1.CommandResult
	ended   *registry.Disconnect // set once, when the session ends
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
// Done. Ending an ended session does nothing; the first reason wins.
func (s *Session) End(reason tetherv1.DisconnectReason, message string) {
	s.mu.Lock()
	if s.finished || s.decided != nil {
		s.mu.Unlock()
		return
	}
	d := s.ending(reason, message)
	s.decided = &d
	running := s.running
	if running {
		s.cutTimer = time.AfterFunc(cutDelay, s.cut)
	}
	s.mu.Unlock()
	if running {
		// The handler waits in Recv: the Close is sent from here, the end
		// recorded at once, and the connection closed cutDelay later,
		// which ends the Recv.
		go func() {
			s.sendClose(reason, message)
			s.hub.endSession(s, d)
		}()
	}
	// Not running yet: the handler sends the Close when it starts.
}

// cutDelay is how long after a Close the session's connection is closed
// when the handler cannot return by itself (it waits in Recv): time for the
// transport to write the Close. A live agent closes the stream on Close
// anyway; a dead one never reads it.
const cutDelay = 200 * time.Millisecond

// sendClose tells the agent why its session ends.
func (s *Session) sendClose(reason tetherv1.DisconnectReason, message string) {
	_ = s.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: &tetherv1.Close{Reason: reason, Message: message}}})
}

// cut closes the session's connection, which ends the handler's Recv.
func (s *Session) cut() {
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if !finished && s.conn != nil {
		_ = s.conn.Close()
	}
}

// send writes one message on the stream, after HelloAck and before the
// handler returns; one sender at a time.
func (s *Session) send(m *tetherv1.ConnectResponse) error {
	select {
	case <-s.acked:
	case <-s.done:
		return io.EOF
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendShut {
		return io.EOF
	}
	return s.stream.Send(m)
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
	if s.pending == nil {
		s.pending = make(map[string]chan *tetherv1.CommandResult) // most sessions never get a command
	}
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
	case <-s.acked:
	case <-s.done:
		forget()
		return id, nil, s.abortedErr()
	case <-ctx.Done():
		forget()
		return id, nil, status.Errorf(codes.DeadlineExceeded, "command %s to device %s: not sent before the deadline", id, s.DeviceID)
	}
	if err := s.send(msg); err != nil {
		// The stream is ending; its end is what the caller learns.
		select {
		case <-s.done:
		case <-ctx.Done():
		}
		forget()
		return id, nil, s.abortedErr()
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

// inbound is the first message of a stream (the Hello), read by a
// short-lived goroutine so that its wait can time out.
type inbound struct {
	msg *tetherv1.ConnectRequest
	err error
}

// run is the session's handler loop, started once HelloAck is sent: it
// reads and handles the agent's messages, with the Ping schedule and the
// ping timeout running as timers beside it. It returns the end to record.
func (s *Session) run(ctx context.Context) registry.Disconnect {
	cfg := s.hub.cfg
	stream := s.stream
	appPong := s.Mode == tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG

	s.mu.Lock()
	if d := s.decided; d != nil {
		// Ended (replaced, kicked, drained) before it began.
		s.finished = true
		s.mu.Unlock()
		s.sendClose(d.Reason, d.Message)
		s.shutSend()
		return *d
	}
	s.running = true
	s.infoRate = newInfoLimiter(time.Now())
	if appPong {
		// The first Ping comes at a random point of the first interval so
		// that a reconnect storm does not ping in lockstep ever after.
		s.pingTimer = time.AfterFunc(time.Duration(rand.Int64N(int64(cfg.PingInterval)))+1, s.pingDue)
		s.pongTimer = time.AfterFunc(time.Hour, s.pongDue)
		s.pongTimer.Stop()
	}
	s.mu.Unlock()
	defer s.finish()

	// decide records this handler's own end (first wins) and tells the
	// agent; it returns the end that won.
	decide := func(reason tetherv1.DisconnectReason, msg string) registry.Disconnect {
		s.mu.Lock()
		if d := s.decided; d != nil {
			s.mu.Unlock()
			return *d
		}
		d := s.ending(reason, msg)
		s.decided = &d
		s.mu.Unlock()
		s.sendClose(reason, msg)
		return d
	}

	for {
		m, err := stream.Recv()
		if err != nil {
			s.mu.Lock()
			d := s.decided
			s.mu.Unlock()
			if d != nil {
				return *d
			}
			return s.transportEnd(err)
		}
		now := time.Now()
		s.lastSeen.Store(now.UnixNano())
		s.mu.Lock()
		if s.decided != nil {
			// Ended (and perhaps recorded) already; the stream is about
			// to close. Nothing the agent sends now may write the
			// registry.
			s.mu.Unlock()
			continue
		}
		if s.awaiting {
			s.awaiting, s.deferred = false, 0
			s.pongTimer.Stop()
		}
		s.mu.Unlock()
		switch m := m.Msg.(type) {
		case *tetherv1.ConnectRequest_Pong:
			if sent := m.Pong.GetPingSentAt(); sent != nil && m.Pong.GetSeq() <= s.pingSeq() {
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
				return decide(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "InfoUpdate refused: "+err.Error())
			}
			if info == nil {
				break
			}
			s.mu.Lock()
			if s.pendingInfo != nil {
				s.pendingInfo = info // the timer is armed; the newest wins
				s.mu.Unlock()
				break
			}
			ok, wait := s.infoRate.take(now)
			if !ok {
				s.pendingInfo = info
				if s.infoTimer == nil {
					s.infoTimer = time.AfterFunc(wait, func() { s.infoDue(ctx) })
				} else {
					s.infoTimer.Reset(wait)
				}
			}
			s.mu.Unlock()
			if ok {
				s.hub.updateInfo(ctx, s, info)
			}
		case *tetherv1.ConnectRequest_Hello:
			return decide(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "second Hello on one stream")
		default:
			return decide(tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR, "empty or unknown message")
		}
	}
}

func (s *Session) pingSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// finish stops the session's timers; no callback acts after it.
func (s *Session) finish() {
	s.mu.Lock()
	s.finished = true
	for _, t := range []*time.Timer{s.pingTimer, s.pongTimer, s.infoTimer, s.cutTimer} {
		if t != nil {
			t.Stop()
		}
	}
	s.mu.Unlock()
	s.shutSend()
}

// shutSend makes every later send fail: grpc-go does not allow a Send once
// the handler has returned. It waits for a Send in progress, which the end
// of the stream releases.
func (s *Session) shutSend() {
	s.sendMu.Lock()
	s.sendShut = true
	s.sendMu.Unlock()
}

// pingDue sends the next Ping (a timer callback).
func (s *Session) pingDue() {
	s.mu.Lock()
	if s.finished || s.decided != nil {
		s.mu.Unlock()
		return
	}
	s.seq++
	seq := s.seq
	now := time.Now()
	if !s.awaiting {
		// Armed before the Send, so that an answer faster than this
		// callback finds it waiting.
		s.awaiting, s.pingAt = true, now
		s.pongTimer.Reset(s.hub.cfg.PingTimeout)
	}
	s.pingTimer.Reset(s.hub.nextPing())
	s.mu.Unlock()
	// A failed Send means the transport is gone: the handler's Recv fails
	// too and records the end.
	_ = s.send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Ping{Ping: &tetherv1.Ping{Seq: seq, SentAt: timestamppb.New(now)}}})
}

// pongDue runs when a Ping went unanswered for the ping timeout (a timer
// callback).
func (s *Session) pongDue() {
	cfg := s.hub.cfg
	s.mu.Lock()
	if s.finished || s.decided != nil || !s.awaiting {
		s.mu.Unlock()
		return
	}
	if ev := s.signOfLife(s.pingAt, 0); ev != "" && s.deferred < cfg.PingTimeout {
		// The agent answered (or sent something) and this server has not
		// got to it yet: an overloaded replica must not blame the device
		// for its own lateness.
		step := max(cfg.PingTimeout/4, 50*time.Millisecond)
		s.deferred += step
		s.pongTimer.Reset(step)
		s.mu.Unlock()
		s.hub.metrics.TimeoutDeferred(ev)
		s.hub.admission.late(time.Now())
		return
	}
	msg := fmt.Sprintf("no message within %v of the Ping sent at %s", cfg.PingTimeout, s.pingAt.UTC().Format(time.RFC3339Nano))
	d := s.ending(tetherv1.DisconnectReason_DISCONNECT_REASON_PING_TIMEOUT, msg)
	s.decided = &d
	s.cutTimer = time.AfterFunc(cutDelay, s.cut)
	s.mu.Unlock()
	s.hub.metrics.Detected(time.Since(s.LastSeen()))
	s.sendClose(d.Reason, msg)
	s.hub.endSession(s, d)
}

// infoDue writes the InfoUpdate that waited for the rate (a timer
// callback).
func (s *Session) infoDue(ctx context.Context) {
	s.mu.Lock()
	info := s.pendingInfo
	s.pendingInfo = nil
	if info != nil {
		s.infoRate.take(time.Now())
	}
	over := s.finished || s.decided != nil
	s.mu.Unlock()
	if info != nil && !over {
		s.hub.updateInfo(ctx, s, info)
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
