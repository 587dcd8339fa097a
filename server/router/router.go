package router

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/session"
)

// forwardSlack is added to a forwarded command's deadline so that the
// owner's own DEADLINE_EXCEEDED answer arrives before the hop gives up.
const forwardSlack = 2 * time.Second

// Registry is what the router reads of the registry: devices (to find
// their session) and nodes (to find the owner's peer address).
type Registry interface {
	registry.Reader
	registry.Nodes
}

// Config configures a Router.
type Config struct {
	// Hub is this replica's session hub (its node name is the router's).
	Hub *session.Hub
	// Registry is read to find sessions and owners.
	Registry Registry
	// Peers reaches other replicas; nil means operations on devices held
	// by another replica answer UNAVAILABLE (OWNER_UNREACHABLE).
	Peers *Peers
	// OutputCap bounds command output relayed to callers. Default 64 KiB.
	OutputCap int
	// Metrics, if set, counts the commands served for peers.
	Metrics *metrics.Metrics
	Logger  *slog.Logger
}

// Router runs operations on devices' sessions wherever they are held.
type Router struct {
	cfg Config
}

// New returns a Router.
func New(cfg Config) *Router {
	if cfg.OutputCap <= 0 {
		cfg.OutputCap = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Router{cfg: cfg}
}

// Node is this replica's node name.
func (r *Router) Node() string { return r.cfg.Hub.Config().Node }

// Op is one operation on a device's current session: exactly one of
// Command and Disconnect is set.
type Op struct {
	Command    *tetherv1.SendCommandRequest
	Disconnect *tetherv1.DisconnectDeviceRequest
}

func (o Op) deviceID() string {
	if o.Command != nil {
		return o.Command.GetDeviceId()
	}
	return o.Disconnect.GetDeviceId()
}

// Result is the answer to an Op, of its kind.
type Result struct {
	Command    *tetherv1.SendCommandResponse
	Disconnect *tetherv1.DisconnectDeviceResponse
}

// Validate checks an operation's request (INVALID_ARGUMENT) and returns
// the command timeout (0 for a disconnect).
func (o Op) Validate() (time.Duration, error) {
	switch {
	case o.Command != nil && o.Disconnect == nil:
		if err := ValidID(o.Command.GetDeviceId()); err != nil {
			return 0, err
		}
		if err := ValidateCommand(o.Command.GetName(), o.Command.GetArgs()); err != nil {
			return 0, err
		}
		return CommandTimeout(o.Command.GetTimeout())
	case o.Disconnect != nil && o.Command == nil:
		return 0, ValidID(o.Disconnect.GetDeviceId())
	}
	return 0, status.Error(codes.InvalidArgument, "exactly one operation is required")
}

// StoreErr maps a registry error to a gRPC status; op names what was read.
func StoreErr(op string, err error) error {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		// The store's wrapping ("get d9: registry: device not found") is
		// internal; callers get the short form.
		return status.Errorf(codes.NotFound, "%s not found", op)
	case errors.Is(err, registry.ErrEventsExpired):
		return status.Errorf(codes.OutOfRange, "%s: %v; reopen the watch with include_snapshot=true", op, err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: %v", op, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: %v", op, err)
	case errors.Is(err, registry.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s: the device registry is unreachable, retry later: %v", op, err)
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// OfflineErr is the UNAVAILABLE answer for an offline device.
func OfflineErr(r registry.Record) error {
	if l := r.LastDisconnect; l != nil && !l.Time.IsZero() {
		return status.Errorf(codes.Unavailable, "device %s is offline since %s (%s)", r.DeviceID, l.Time.UTC().Format(time.RFC3339), metrics.ReasonLabel(l.Reason))
	}
	return status.Errorf(codes.Unavailable, "device %s is offline", r.DeviceID)
}

// Locate reads the device's record; an offline device is an UNAVAILABLE
// error.
func (r *Router) Locate(ctx context.Context, deviceID string) (registry.Record, error) {
	rec, err := r.cfg.Registry.Get(ctx, deviceID)
	if err != nil {
		return registry.Record{}, StoreErr("device "+deviceID, err)
	}
	if rec.Session == nil {
		return rec, OfflineErr(rec)
	}
	return rec, nil
}

// Run validates op, finds the device's current session and runs op on it.
func (r *Router) Run(ctx context.Context, op Op) (Result, error) {
	if _, err := op.Validate(); err != nil {
		return Result{}, err
	}
	rec, err := r.Locate(ctx, op.deviceID())
	if err != nil {
		return Result{}, err
	}
	return r.At(ctx, rec.Session.Node, rec.Session.Lease, op)
}

// At runs a validated op on the session of lease held by node: locally
// when node is this replica, else over PeerService.Invoke. It is never
// re-sent to another session: when node no longer holds lease the error
// is marked NOT_HELD.
func (r *Router) At(ctx context.Context, node string, lease uint64, op Op) (Result, error) {
	if node == r.Node() {
		return r.Local(ctx, lease, op)
	}
	return r.forward(ctx, node, lease, op)
}

// Local runs a validated op on this replica's session of the device, only
// if that session holds lease.
func (r *Router) Local(ctx context.Context, lease uint64, op Op) (Result, error) {
	timeout, err := op.Validate()
	if err != nil {
		return Result{}, err
	}
	id := op.deviceID()
	sess, err := r.localSession(ctx, id, lease)
	if err != nil {
		return Result{}, mark(err, ReasonNotHeld, id, r.Node())
	}
	if op.Command != nil {
		res, err := r.command(ctx, sess, op.Command, timeout)
		return Result{Command: res}, mark(err, ReasonOwnerAnswer, id, r.Node())
	}
	res, err := r.disconnect(ctx, sess, op.Disconnect)
	return Result{Disconnect: res}, mark(err, ReasonOwnerAnswer, id, r.Node())
}

func (r *Router) command(ctx context.Context, sess *session.Session, req *tetherv1.SendCommandRequest, timeout time.Duration) (*tetherv1.SendCommandResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, res, err := sess.Command(ctx, req.GetName(), req.GetArgs(), timeout)
	if err != nil {
		return nil, err
	}
	out := res.GetOutput()
	truncated := res.GetOutputTruncated()
	if len(out) > r.cfg.OutputCap {
		out, truncated = strings.ToValidUTF8(out[:r.cfg.OutputCap], ""), true
	}
	return &tetherv1.SendCommandResponse{
		CommandId: id, LeaseId: sess.Lease, Node: r.Node(),
		ExitCode: res.GetExitCode(), Output: out, OutputTruncated: truncated, Error: res.GetError(),
		Duration: res.GetDuration(), CompletedAt: timestamppb.Now(),
	}, nil
}

func (r *Router) disconnect(ctx context.Context, sess *session.Session, req *tetherv1.DisconnectDeviceRequest) (*tetherv1.DisconnectDeviceResponse, error) {
	msg := req.GetMessage()
	if msg == "" {
		msg = "disconnected by an operator"
	}
	sess.End(tetherv1.DisconnectReason_DISCONNECT_REASON_KICKED, msg)
	select {
	case <-sess.Recorded(): // ended, and the registry says so
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &tetherv1.DisconnectDeviceResponse{LeaseId: sess.Lease, Node: r.Node()}, nil
}

// localSession returns this replica's session of the device if it holds
// exactly lease. Otherwise the registry is read again to say precisely what
// happened: the device went offline (UNAVAILABLE) or a newer session took
// over (ABORTED; the request is not re-sent to it).
func (r *Router) localSession(ctx context.Context, deviceID string, lease uint64) (*session.Session, error) {
	if sess := r.cfg.Hub.Lookup(deviceID); sess != nil && sess.Lease == lease {
		return sess, nil
	}
	rec, err := r.cfg.Registry.Get(ctx, deviceID)
	if err != nil {
		return nil, StoreErr("device "+deviceID, err)
	}
	if rec.Session == nil {
		return nil, OfflineErr(rec)
	}
	if rec.Session.Lease != lease {
		return nil, status.Errorf(codes.Aborted, "device %s: session %d was replaced by session %d (node %s) before the request was delivered; it was not re-sent", deviceID, lease, rec.Session.Lease, rec.Session.Node)
	}
	return nil, status.Errorf(codes.Unavailable, "device %s: session %d is not held by node %s", deviceID, lease, r.Node())
}

// forward runs op on node's session of lease over PeerService.Invoke.
func (r *Router) forward(ctx context.Context, node string, lease uint64, op Op) (Result, error) {
	id := op.deviceID()
	if r.cfg.Peers == nil {
		return Result{}, notSentf(id, node, "device %s is held by node %s and peer routing is disabled on node %s", id, node, r.Node())
	}
	addr, err := r.cfg.Registry.NodeAddr(ctx, node)
	if errors.Is(err, registry.ErrNotFound) {
		return Result{}, notSentf(id, node, "device %s was held by node %s, which stopped renewing its registry lease (crashed?); the device is offline until it reconnects", id, node)
	}
	if err != nil {
		return Result{}, StoreErr("node "+node, err)
	}
	peer, err := r.cfg.Peers.client(addr)
	if err != nil {
		return Result{}, notSentf(id, node, "owner node %s unreachable: %v", node, err)
	}
	if op.Command != nil {
		timeout, _ := CommandTimeout(op.Command.GetTimeout())
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout+forwardSlack)
		defer cancel()
	}
	ctx = access.ToPeer(ctx, node) // the proof is bound to the owner
	req := &tetherv1.InvokeRequest{LeaseId: lease}
	if op.Command != nil {
		req.Op = &tetherv1.InvokeRequest_Command{Command: op.Command}
	} else {
		req.Op = &tetherv1.InvokeRequest_Disconnect{Disconnect: op.Disconnect}
	}
	resp, err := peer.Invoke(ctx, req)
	if status.Code(err) == codes.Unimplemented && Reason(err) == "" {
		// A replica of an older version (rolling upgrade): the legacy call.
		return r.forwardLegacy(ctx, peer, node, lease, op)
	}
	if err != nil {
		return Result{}, relayErr(id, node, err)
	}
	return Result{Command: resp.GetCommand(), Disconnect: resp.GetDisconnect()}, nil
}

func (r *Router) forwardLegacy(ctx context.Context, peer tetherv1.PeerServiceClient, node string, lease uint64, op Op) (Result, error) {
	if op.Command != nil {
		resp, err := peer.ForwardCommand(ctx, &tetherv1.ForwardCommandRequest{Request: op.Command, LeaseId: lease})
		if err != nil {
			return Result{}, relayErr(op.deviceID(), node, err)
		}
		return Result{Command: resp.GetResponse()}, nil
	}
	resp, err := peer.ForwardDisconnect(ctx, &tetherv1.ForwardDisconnectRequest{Request: op.Disconnect, LeaseId: lease})
	if err != nil {
		return Result{}, relayErr(op.deviceID(), node, err)
	}
	return Result{Disconnect: resp.GetResponse()}, nil
}

// relayErr keeps the owner's marked answers as they are; any other error
// is the hop's own (the owner was not reached, or did not answer in time)
// and is marked OWNER_UNREACHABLE, an UNAVAILABLE one saying which hop.
func relayErr(deviceID, node string, err error) error {
	if Reason(err) != "" {
		return err
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		return markf(codes.Unavailable, ReasonOwnerUnreachable, deviceID, node, "owner node %s unreachable: %s", node, st.Message())
	}
	return mark(err, ReasonOwnerUnreachable, deviceID, node)
}
