package session

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/logging"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
)

// Hub holds this replica's sessions and implements AgentService.
type Hub struct {
	tetherv1.UnimplementedAgentServiceServer

	cfg     Config
	store   Store
	metrics *metrics.Metrics
	log     *slog.Logger

	// mu guards the following.
	mu       sync.Mutex
	sessions map[string]*Session
	draining bool
	releases []pendingRelease // Release/ReleaseClaim calls whose outcome was unknown, to retry
	claiming map[string]int   // device id -> Claims in flight (reconciliation leaves those alone)
	epoch    string           // the store's last seen registry.Epocher value

	retryTouch   atomic.Bool // a touch had unknown outcomes: touch again at the next renewal
	reconcileNow atomic.Bool // reconcile at the next renewal (the store changed server)

	flaps        *flapGuard
	admission    *admission
	active       sync.WaitGroup // running Connect handlers
	storeHealthy atomic.Bool
}

const replaced = tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED

// StoreHealthy reports whether the last registry renewal succeeded.
func (h *Hub) StoreHealthy() bool { return h.storeHealthy.Load() }

func (h *Hub) setStoreHealthy(ok bool) { h.storeHealthy.Store(ok) }

// pendingRelease is a Release (or, with claimID, a ReleaseClaim) whose
// outcome was unknown, to retry until it is known.
type pendingRelease struct {
	deviceID string
	claimID  string
	end      registry.Disconnect
}

// claimAttempts is how many times open sends a Claim whose outcome is
// unknown (the same claim id each time: a retry of an applied claim returns
// the same lease) before it refuses the agent and undoes the claim.
const claimAttempts = 2

// Store is what the hub needs of the registry: the session writes
// (registry.Leases) and its node's liveness (registry.Nodes).
type Store interface {
	registry.Leases
	registry.Nodes
}

// NewHub creates a Hub. m may be nil.
func NewHub(cfg Config, store Store, m *metrics.Metrics) (*Hub, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Hub{cfg: cfg, store: store, metrics: m, log: cfg.Logger, sessions: make(map[string]*Session), claiming: make(map[string]int), flaps: newFlapGuard(cfg),
		admission: &admission{maxPending: cfg.MaxPendingHellos, schedLimit: cfg.ShedSchedLatency, lateFor: cfg.PingTimeout}}, nil
}

// Config returns the hub's effective configuration.
func (h *Hub) Config() Config { return h.cfg }

// Lookup returns the local session of a device, or nil.
func (h *Hub) Lookup(deviceID string) *Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[deviceID]
}

// Len is the number of sessions held.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

func (h *Hub) isDraining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// nextPing is the gap to the next Ping: the interval shortened by a random
// fraction in [0.05, PingJitter], never lengthened.
func (h *Hub) nextPing() time.Duration {
	j := 0.05 + rand.Float64()*(h.cfg.PingJitter-0.05)
	return time.Duration(float64(h.cfg.PingInterval) * (1 - j))
}

// Connect serves one agent stream.
func (h *Hub) Connect(stream tetherv1.AgentService_ConnectServer) error {
	h.active.Add(1)
	defer h.active.Done()
	ctx := stream.Context()
	if h.isDraining() {
		h.metrics.HelloRejected(codes.Unavailable.String())
		return status.Error(codes.Unavailable, "server is draining; reconnect to another replica")
	}

	// Only the Hello is read by another goroutine (so that its wait can
	// time out); after it, this handler is the stream's only reader.
	in := make(chan inbound, 1)
	go func() {
		m, err := stream.Recv()
		in <- inbound{m, err}
	}()

	hello, err := h.awaitHello(ctx, in)
	if err == nil {
		err = h.admit(ctx, stream, hello)
	}
	if err == nil {
		// Counted as pending from here until its session is installed
		// (or refused): not for the life of the session.
		if signal := h.admission.enter(time.Now()); signal != "" {
			h.admission.leave()
			err = h.shed(stream, signal)
		}
	}
	if err != nil {
		h.metrics.HelloRejected(status.Code(err).String())
		h.log.Debug("hello refused", "err", err)
		return err
	}
	s, err := h.open(ctx, stream, hello)
	h.admission.leave()
	if err != nil {
		h.metrics.HelloRejected(status.Code(err).String())
		return err
	}
	ack := &tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_HelloAck{HelloAck: &tetherv1.HelloAck{
		LeaseId: s.Lease, ServerNode: h.cfg.Node,
		PingInterval: durationpb.New(h.cfg.PingInterval), PingTimeout: durationpb.New(h.cfg.PingTimeout),
		LivenessMode: s.Mode,
	}}}
	var d registry.Disconnect
	s.sendMu.Lock()
	err = stream.Send(ack)
	s.sendMu.Unlock()
	close(s.acked)
	if err != nil {
		d = s.transportEnd(err)
		s.finish()
	} else {
		d = s.run(ctx)
	}
	h.endSession(s, d)
	if d.Reason == tetherv1.DisconnectReason_DISCONNECT_REASON_PROTOCOL_ERROR {
		// After the in-band Close, the stream's status says it too.
		return status.Errorf(codes.InvalidArgument, "protocol error: %s", d.Message)
	}
	return nil
}

func (h *Hub) awaitHello(ctx context.Context, in <-chan inbound) (*tetherv1.Hello, error) {
	t := time.NewTimer(h.cfg.HelloTimeout)
	defer t.Stop()
	select {
	case item := <-in:
		if item.err != nil {
			return nil, status.Errorf(codes.Canceled, "stream ended before Hello: %v", item.err)
		}
		hello := item.msg.GetHello()
		if hello == nil {
			return nil, status.Error(codes.InvalidArgument, "the first message on a Connect stream must be Hello")
		}
		if err := deviceid.Validate(hello.GetDeviceId()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "Hello: %v", err)
		}
		if err := ValidateInfo(hello.GetInfo()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "Hello: %v", err)
		}
		return hello, nil
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no Hello within %v of opening the stream", h.cfg.HelloTimeout)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// admit checks a valid Hello before anything is written: the device id
// must be the authenticated one (PERMISSION_DENIED otherwise), and a device
// id cooling down after flapping is refused with Close(FLAPPING,
// retry_after) and RESOURCE_EXHAUSTED.
func (h *Hub) admit(ctx context.Context, stream tetherv1.AgentService_ConnectServer, hello *tetherv1.Hello) error {
	id := hello.GetDeviceId()
	if d, ok := access.DeviceFrom(ctx); ok && d.ID != id {
		h.log.Warn("hello for another device refused", "device", id, "authenticated_as", d.ID, "token", d.TokenID)
		return status.Errorf(codes.PermissionDenied, "Hello for device %q, but the credentials are for device %q", id, d.ID)
	}
	now := time.Now()
	if until, ok := h.flaps.coolingDown(id, now); ok {
		wait := until.Sub(now)
		msg := fmt.Sprintf("device %s was taken over more than %d times within %v (two agents with one device id?); refused for %v", id, h.cfg.FlapLimit, h.cfg.FlapWindow, wait.Round(time.Second))
		_ = stream.Send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: &tetherv1.Close{
			Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_FLAPPING, Message: msg, RetryAfter: durationpb.New(wait),
		}}})
		return status.Error(codes.ResourceExhausted, msg)
	}
	return nil
}

// shed refuses a Hello because the replica is saturated: Close(OVERLOADED)
// with a jittered retry_after, then RESOURCE_EXHAUSTED. Nothing was
// written to the registry.
func (h *Hub) shed(stream tetherv1.AgentService_ConnectServer, signal string) error {
	h.metrics.HelloShed(signal)
	wait := retryAfter(h.cfg.ShedRetryAfter)
	msg := fmt.Sprintf("server overloaded (%s); retry in %v or on another replica", signal, wait.Round(100*time.Millisecond))
	_ = stream.Send(&tetherv1.ConnectResponse{Msg: &tetherv1.ConnectResponse_Close{Close: &tetherv1.Close{
		Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_OVERLOADED, Message: msg, RetryAfter: durationpb.New(wait),
	}}})
	return status.Error(codes.ResourceExhausted, msg)
}

// open claims a lease for the Hello's device and installs the session,
// replacing any older local session of the device.
func (h *Hub) open(ctx context.Context, stream tetherv1.AgentService_ConnectServer, hello *tetherv1.Hello) (*Session, error) {
	mode := tetherv1.LivenessMode_LIVENESS_MODE_TRANSPORT_ONLY
	for _, c := range hello.GetCapabilities() {
		if c == tetherv1.Capability_CAPABILITY_PONG {
			mode = tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG
		}
	}
	info := hello.GetInfo()
	if info == nil {
		info = &tetherv1.DeviceInfo{}
	}
	if info.GetAgentVersion() == "" {
		info.AgentVersion = hello.GetAgentVersion()
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	id := hello.GetDeviceId()
	var floor uint64
	if old := h.Lookup(id); old != nil {
		floor = old.Lease
	}
	now := time.Now()
	req := registry.ClaimRequest{
		DeviceID: id, Node: h.cfg.Node, RemoteAddr: remote, Mode: mode, Info: info, Now: now, MinLease: floor, ClaimID: newClaimID(),
	}
	h.mu.Lock()
	h.claiming[id]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.claiming[id]--; h.claiming[id] <= 0 {
			delete(h.claiming, id)
		}
		h.mu.Unlock()
	}()
	claimed, err := h.claim(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		// The agent gave up while the claim was slow (a frozen or slow
		// Redis): its session never began, so it is not started and
		// ended; the claim is released, fenced by its lease.
		h.release(id, registry.Disconnect{Lease: claimed.Lease, Node: h.cfg.Node, Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_CLIENT_CLOSED,
			Time: time.Now(), Message: "the agent left before its session began (the registry answered late)"})
		return nil, status.FromContextError(err).Err()
	}
	if claimed.Replaced != nil && h.flaps.takeover(id, now) {
		h.metrics.Flapping()
		h.log.Warn("device flapping: taken over too often; refusing its Hellos for a while", "device", id,
			"limit", h.cfg.FlapLimit, "window", h.cfg.FlapWindow, "cooldown", h.cfg.FlapCooldown, "event", tetherv1.EventType_EVENT_TYPE_FLAPPING.String())
	}
	var tokenID string
	var tokenExpiry time.Time
	if d, ok := access.DeviceFrom(ctx); ok {
		tokenID, tokenExpiry = d.TokenID, d.Expiry
	}
	s := &Session{
		DeviceID: id, Lease: claimed.Lease, TokenID: tokenID, TokenExpiry: tokenExpiry, Mode: mode, RemoteAddr: remote, ConnectedAt: now, BootID: info.GetBootId(),
		hub: h, conn: ConnFrom(ctx), stream: stream,
		done: make(chan struct{}), recorded: make(chan struct{}), acked: make(chan struct{}),
	}
	s.lastSeen.Store(now.UnixNano())
	s.info.Store(info)

	h.mu.Lock()
	old := h.sessions[id]
	stale := old != nil && old.Lease > s.Lease
	if !stale {
		h.sessions[id] = s
	}
	h.mu.Unlock()
	if stale {
		// A concurrent Hello of the same device won a newer lease first;
		// the store already ended this one as REPLACED.
		return nil, status.Errorf(codes.Aborted, "device %s: lease %d was superseded by %d before the session started", id, s.Lease, old.Lease)
	}
	if old != nil {
		old.End(tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED, "replaced by a newer session of the same device")
	}
	h.metrics.SessionStarted(mode)
	attrs := []any{"device", id, "lease", s.Lease, "node", h.cfg.Node, "remote", remote, "mode", metrics.ModeLabel(mode), "agent_version", info.GetAgentVersion()}
	if r := claimed.Replaced; r != nil {
		attrs = append(attrs, "replaced_lease", r.Lease, "replaced_node", r.Node, "restart", logging.Restart(r.Restart))
	}
	h.log.Info("session started", attrs...)
	return s, nil
}

// claim sends req (again, with the same claim id, while its outcome is
// unknown). When the outcome stays unknown, the agent is refused and the
// claim is undone with ReleaseClaim — retried until its outcome is known —
// so a claim whose reply was lost can never leave the device reading online
// with no session behind it.
func (h *Hub) claim(ctx context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	var err error
	for attempt := 0; attempt < claimAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		// Bounded by StoreTimeout alone, not tied to the stream: a child of
		// the stream's context would leave a map of children behind in it
		// for the life of the session (≈ 250 B each), and an agent that
		// leaves mid-claim is handled below either way.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.StoreTimeout)
		var c registry.Claimed
		c, err = h.store.Claim(sctx, req)
		cancel()
		if err == nil {
			h.metrics.Outcome("claim", "applied")
			if c.Again {
				h.log.Info("claim applied by an earlier attempt whose reply was lost", "device", req.DeviceID, "lease", c.Lease)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	h.metrics.StoreError("claim")
	h.metrics.Outcome("claim", "unknown")
	h.log.Warn("claim outcome unknown; refusing the agent and undoing the claim", "device", req.DeviceID, "claim", req.ClaimID, "err", err)
	// Undone in the background: the refusal does not wait for a store that
	// may be down (a failed undo is queued and retried at every renewal).
	go h.releaseClaim(req.DeviceID, req.ClaimID, registry.Disconnect{
		Node: h.cfg.Node, Reason: tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED, Time: time.Now(),
		Message: "the claim's outcome was unknown (a lost reply or an error reply); the agent was refused and reconnects",
	})
	return registry.Claimed{}, status.Error(codes.Unavailable, "registry unavailable, retry with backoff")
}

// newClaimID returns a random claim id.
func newClaimID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// endSession closes s with d unless it was closed already (by the timer or
// the End that decided its end while the handler waited in Recv).
func (h *Hub) endSession(s *Session, d registry.Disconnect) {
	s.closeOnce.Do(func() { h.close(s, d) })
}

// close finishes a session: it leaves the hub (only if it is still the
// device's session there), wakes command callers, and records the end in the
// registry, fenced by its lease.
func (h *Hub) close(s *Session, d registry.Disconnect) {
	defer close(s.recorded)
	s.cmdMu.Lock()
	s.ended = &d
	s.cmdMu.Unlock()
	close(s.done)

	h.mu.Lock()
	if h.sessions[s.DeviceID] == s {
		delete(h.sessions, s.DeviceID)
	}
	h.mu.Unlock()
	h.metrics.SessionEnded(s.Mode, d.Reason)
	h.log.Info("session ended", "device", s.DeviceID, "lease", s.Lease, "node", h.cfg.Node, "remote", s.RemoteAddr,
		"reason", metrics.ReasonLabel(d.Reason), "detail", d.Message, "duration", d.Time.Sub(s.ConnectedAt).Round(time.Millisecond))

	if d.Reason == tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED {
		// The Claim that replaced this session already recorded its end.
		return
	}
	h.release(s.DeviceID, d)
}

func (h *Hub) release(deviceID string, d registry.Disconnect) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.StoreTimeout)
	defer cancel()
	err := h.store.Release(ctx, deviceID, d)
	outcome := registry.OutcomeOf(err)
	h.metrics.Outcome("release", outcome)
	switch outcome {
	case "applied":
	case "stale", "missing":
		// A newer session exists, or there is nothing left to end.
		h.metrics.StaleWrite("release")
		h.log.Debug("release found nothing to end", "device", deviceID, "lease", d.Lease, "reason", metrics.ReasonLabel(d.Reason), "outcome", outcome)
	default:
		h.metrics.StoreError("release")
		h.log.Warn("release outcome unknown; will retry", "device", deviceID, "lease", d.Lease, "err", err)
		h.mu.Lock()
		h.releases = append(h.releases, pendingRelease{deviceID: deviceID, end: d})
		h.mu.Unlock()
	}
}

// releaseClaim undoes a claim whose outcome was unknown; it retries until
// the outcome is known.
func (h *Hub) releaseClaim(deviceID, claimID string, d registry.Disconnect) {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.StoreTimeout)
	defer cancel()
	err := h.store.ReleaseClaim(ctx, deviceID, claimID, d)
	outcome := registry.OutcomeOf(err)
	h.metrics.Outcome("release_claim", outcome)
	switch outcome {
	case "applied":
		h.log.Info("undid a claim whose outcome had been unknown", "device", deviceID, "claim", claimID)
	case "stale", "missing":
	default:
		h.mu.Lock()
		h.releases = append(h.releases, pendingRelease{deviceID: deviceID, claimID: claimID, end: d})
		h.mu.Unlock()
	}
}

func (h *Hub) updateInfo(ctx context.Context, s *Session, info *tetherv1.DeviceInfo) {
	if info == nil {
		return
	}
	if info.GetAgentVersion() == "" {
		info.AgentVersion = s.Info().GetAgentVersion()
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	err := h.store.UpdateInfo(ctx, s.DeviceID, s.Lease, info)
	outcome := registry.OutcomeOf(err)
	h.metrics.Outcome("update_info", outcome)
	switch outcome {
	case "applied":
		s.info.Store(info)
	case "stale":
		h.metrics.StaleWrite("update_info")
		h.log.Debug("stale info update refused", "device", s.DeviceID, "lease", s.Lease)
	case "missing":
		// The registry lost this session: write it back with the new info.
		s.info.Store(info)
		if err := h.remirror(ctx, []*Session{s}); err != nil {
			h.metrics.StoreError("remirror")
			h.retryTouch.Store(true)
		}
	default:
		// Keep the agent's info: the next write-back carries it.
		s.info.Store(info)
		h.metrics.StoreError("update_info")
		h.log.Warn("info update outcome unknown", "device", s.DeviceID, "lease", s.Lease, "err", err)
	}
}

// Sessions returns a snapshot of the held sessions, ordered by device id.
func (h *Hub) Sessions() []*Session {
	h.mu.Lock()
	out := make([]*Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].DeviceID < out[j].DeviceID })
	return out
}

// Drain refuses new streams, tells every held session Close(draining), and
// waits until their handlers have returned (and recorded their ends) or ctx
// ends. It reports how many sessions were still open when it gave up.
func (h *Hub) Drain(ctx context.Context) int {
	h.mu.Lock()
	h.draining = true
	h.mu.Unlock()
	for _, s := range h.Sessions() {
		s.End(tetherv1.DisconnectReason_DISCONNECT_REASON_DRAINING, "server draining; reconnect with backoff")
	}
	done := make(chan struct{})
	go func() { h.active.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
		return h.Len()
	}
}
