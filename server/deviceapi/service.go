package deviceapi

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/feed"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/session"
)

// Limits on requests; Config fields override them.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// DefaultMaxPageBytes bounds the encoded devices of one ListDevices
	// page; a page holds at least one device. It stays well under the
	// 4 MiB gRPC clients accept by default.
	DefaultMaxPageBytes   = 1 << 20
	DefaultCommandTimeout = 10 * time.Second
	MaxCommandTimeout     = 5 * time.Minute
	MaxCommandArgs        = 64
	MaxCommandArgBytes    = 4096
	MaxCommandNameBytes   = 64
)

// Config configures the Service.
type Config struct {
	// WatchHeartbeat is how often an idle watch stream gets a HEARTBEAT
	// event, so that proxies do not cut it. Default 15s.
	WatchHeartbeat time.Duration
	// OutputCap bounds command output relayed to callers. Default 64 KiB.
	OutputCap int
	// Peers reaches other replicas for devices they hold; nil means
	// requests for such devices answer UNAVAILABLE.
	Peers  *Peers
	Logger *slog.Logger

	// MaxPageBytes bounds one ListDevices page by its encoded size as well
	// as by count. Default DefaultMaxPageBytes.
	MaxPageBytes int
	// MaxWatchers caps the open WatchDevices streams of this replica, and
	// MaxWatchersPerKey those of one API key (when keys are configured);
	// more are refused with RESOURCE_EXHAUSTED. Defaults
	// DefaultMaxWatchers and DefaultMaxWatchersPerKey.
	MaxWatchers       int
	MaxWatchersPerKey int
	// KeyName names the API key of a call ("" without keys); the per-key
	// watch cap applies to calls it names.
	KeyName func(ctx context.Context) string
	// MaxSnapshotReads bounds the store reads that watch snapshots and
	// catch-ups run at once (they queue beyond it). Default
	// DefaultMaxSnapshotReads.
	MaxSnapshotReads int
	// WatchBuffer is how many events a watcher may fall behind the event
	// feed before it is ended (it resumes from its last event). Default
	// feed.DefaultBuffer.
	WatchBuffer int
	// Feed configures the replica's event feed (Buffer is WatchBuffer).
	Feed feed.Config
}

// Service implements tetherv1.DeviceServiceServer.
type Service struct {
	tetherv1.UnimplementedDeviceServiceServer
	cfg     Config
	store   registry.Store
	hub     *session.Hub
	metrics *metrics.Metrics

	// closing ends every open watch when the server shuts down (grpc-go's
	// GracefulStop would otherwise wait for them forever).
	closing context.Context
	close   context.CancelFunc

	// The replica's one reader of the registry's events (started by the
	// first watch) and the watch limits.
	feed        *feed.Feed
	feedOnce    sync.Once
	snapshotSem chan struct{}
	watchMu     sync.Mutex
	watches     watchSlots
	wm          watchMetrics

	fleet fleetViews // inventory cache (inventory.go)
}

// Close ends every open WatchDevices stream.
func (s *Service) Close() { s.close() }

// New creates the Service.
func New(cfg Config, store registry.Store, hub *session.Hub, m *metrics.Metrics) *Service {
	if cfg.WatchHeartbeat <= 0 {
		cfg.WatchHeartbeat = 15 * time.Second
	}
	if cfg.OutputCap <= 0 {
		cfg.OutputCap = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxPageBytes <= 0 {
		cfg.MaxPageBytes = DefaultMaxPageBytes
	}
	if cfg.MaxWatchers <= 0 {
		cfg.MaxWatchers = DefaultMaxWatchers
	}
	if cfg.MaxWatchersPerKey <= 0 {
		cfg.MaxWatchersPerKey = DefaultMaxWatchersPerKey
	}
	if cfg.MaxSnapshotReads <= 0 {
		cfg.MaxSnapshotReads = DefaultMaxSnapshotReads
	}
	if cfg.WatchBuffer <= 0 {
		cfg.WatchBuffer = feed.DefaultBuffer
	}
	cfg.Feed.Buffer = cfg.WatchBuffer
	if cfg.Feed.Logger == nil {
		cfg.Feed.Logger = cfg.Logger
	}
	closing, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, store: store, hub: hub, metrics: m, closing: closing, close: cancel,
		feed:        feed.New(store, cfg.Feed),
		snapshotSem: make(chan struct{}, cfg.MaxSnapshotReads),
		watches:     watchSlots{maxTotal: cfg.MaxWatchers, maxPerKey: cfg.MaxWatchersPerKey, perKey: map[string]int{}},
		wm:          newWatchMetrics(),
	}
}

// storeErr maps a registry error to a gRPC status.
func storeErr(op string, err error) error {
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

func validID(id string) error {
	if err := deviceid.Validate(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "device_id: %v", err)
	}
	return nil
}

func (s *Service) local(r registry.Record) *session.Session {
	if s.hub == nil || r.Session == nil {
		return nil
	}
	return s.hub.Lookup(r.DeviceID)
}

// GetDevice implements DeviceService.
func (s *Service) GetDevice(ctx context.Context, req *tetherv1.GetDeviceRequest) (*tetherv1.GetDeviceResponse, error) {
	if err := validID(req.GetDeviceId()); err != nil {
		return nil, err
	}
	r, err := s.store.Get(ctx, req.GetDeviceId())
	if err != nil {
		return nil, storeErr("device "+req.GetDeviceId(), err)
	}
	return &tetherv1.GetDeviceResponse{Device: deviceProto(r, s.local(r))}, nil
}

// Page tokens are the last device id of the previous page, base64url
// encoded so that they stay opaque.
func encodeToken(after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte("a:" + after))
}

func decodeToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), "a:") {
		return "", status.Error(codes.InvalidArgument, "page_token: not a token this API issued")
	}
	after := string(b[2:])
	if err := deviceid.Validate(after); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "page_token: %v", err)
	}
	return after, nil
}

// ListDevices implements DeviceService.
func (s *Service) ListDevices(ctx context.Context, req *tetherv1.ListDevicesRequest) (*tetherv1.ListDevicesResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", size)
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	after, err := decodeToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	selector, err := registry.ParseSelector(req.GetLabelSelector())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var presence registry.Presence
	switch req.GetPresence() {
	case tetherv1.PresenceFilter_PRESENCE_FILTER_UNSPECIFIED:
	case tetherv1.PresenceFilter_PRESENCE_FILTER_ONLINE:
		presence = registry.PresenceOnline
	case tetherv1.PresenceFilter_PRESENCE_FILTER_OFFLINE:
		presence = registry.PresenceOffline
	default:
		return nil, status.Errorf(codes.InvalidArgument, "presence: unknown value %d", req.GetPresence())
	}
	page, err := s.store.List(ctx, registry.ListQuery{After: after, Limit: size, Presence: presence, Selector: selector})
	if err != nil {
		return nil, storeErr("list devices", err)
	}
	resp := &tetherv1.ListDevicesResponse{NextPageToken: encodeToken(page.Next)}
	used := 0
	for i, r := range page.Records {
		d := deviceProto(r, s.local(r))
		n := proto.Size(d)
		if i > 0 && used+n > s.cfg.MaxPageBytes {
			// The page is full by size: continue after the last device sent.
			resp.NextPageToken = encodeToken(page.Records[i-1].DeviceID)
			break
		}
		used += n
		resp.Devices = append(resp.Devices, d)
	}
	return resp, nil
}

// ValidateCommand checks a command request's name and args.
func ValidateCommand(name string, args []string) error {
	if name == "" {
		return status.Error(codes.InvalidArgument, "name: the command name is required")
	}
	if len(name) > MaxCommandNameBytes {
		return status.Errorf(codes.InvalidArgument, "name: longer than %d bytes", MaxCommandNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return status.Errorf(codes.InvalidArgument, "name: character %q not allowed; use [A-Za-z0-9._-]", rune(c))
		}
	}
	if len(args) > MaxCommandArgs {
		return status.Errorf(codes.InvalidArgument, "args: %d arguments, at most %d allowed", len(args), MaxCommandArgs)
	}
	for i, a := range args {
		if len(a) > MaxCommandArgBytes {
			return status.Errorf(codes.InvalidArgument, "args[%d]: longer than %d bytes", i, MaxCommandArgBytes)
		}
	}
	return nil
}

// CommandTimeout validates and defaults a requested timeout.
func CommandTimeout(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return DefaultCommandTimeout, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v", err)
	}
	t := d.AsDuration()
	switch {
	case t < 0:
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v is negative", t)
	case t == 0:
		return DefaultCommandTimeout, nil
	case t > MaxCommandTimeout:
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v exceeds the maximum of %v", t, MaxCommandTimeout)
	}
	return t, nil
}

func offlineErr(r registry.Record) error {
	if l := r.LastDisconnect; l != nil && !l.Time.IsZero() {
		return status.Errorf(codes.Unavailable, "device %s is offline since %s (%s)", r.DeviceID, l.Time.UTC().Format(time.RFC3339), metrics.ReasonLabel(l.Reason))
	}
	return status.Errorf(codes.Unavailable, "device %s is offline", r.DeviceID)
}

// SendCommand implements DeviceService.
func (s *Service) SendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	start := time.Now()
	resp, err := s.sendCommand(ctx, req)
	s.metrics.Command(status.Code(err).String(), time.Since(start))
	return resp, err
}

func (s *Service) sendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	if err := validID(req.GetDeviceId()); err != nil {
		return nil, err
	}
	if err := ValidateCommand(req.GetName(), req.GetArgs()); err != nil {
		return nil, err
	}
	timeout, err := CommandTimeout(req.GetTimeout())
	if err != nil {
		return nil, err
	}
	r, err := s.store.Get(ctx, req.GetDeviceId())
	if err != nil {
		return nil, storeErr("device "+req.GetDeviceId(), err)
	}
	if r.Session == nil {
		return nil, offlineErr(r)
	}
	if r.Session.Node != s.node() {
		return s.forwardCommand(ctx, req, r, timeout)
	}
	return s.commandLocal(ctx, req, r.Session.Lease, timeout)
}

// commandLocal runs a command on this replica's session of the device, only
// if that session holds lease.
func (s *Service) commandLocal(ctx context.Context, req *tetherv1.SendCommandRequest, lease uint64, timeout time.Duration) (*tetherv1.SendCommandResponse, error) {
	sess, err := s.localSession(ctx, req.GetDeviceId(), lease)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, res, err := sess.Command(ctx, req.GetName(), req.GetArgs(), timeout)
	if err != nil {
		return nil, err
	}
	out := res.GetOutput()
	truncated := res.GetOutputTruncated()
	if len(out) > s.cfg.OutputCap {
		out, truncated = strings.ToValidUTF8(out[:s.cfg.OutputCap], ""), true
	}
	return &tetherv1.SendCommandResponse{
		CommandId: id, LeaseId: sess.Lease, Node: s.node(),
		ExitCode: res.GetExitCode(), Output: out, OutputTruncated: truncated, Error: res.GetError(),
		Duration: res.GetDuration(), CompletedAt: timestamppb.Now(),
	}, nil
}

func (s *Service) node() string { return s.hub.Config().Node }

// localSession returns this replica's session of the device if it holds
// exactly lease. Otherwise the registry is read again to say precisely what
// happened: the device went offline (UNAVAILABLE) or a newer session took
// over (ABORTED; the request is not re-sent to it).
func (s *Service) localSession(ctx context.Context, deviceID string, lease uint64) (*session.Session, error) {
	if sess := s.hub.Lookup(deviceID); sess != nil && sess.Lease == lease {
		return sess, nil
	}
	r, err := s.store.Get(ctx, deviceID)
	if err != nil {
		return nil, storeErr("device "+deviceID, err)
	}
	if r.Session == nil {
		return nil, offlineErr(r)
	}
	if r.Session.Lease != lease {
		return nil, status.Errorf(codes.Aborted, "device %s: session %d was replaced by session %d (node %s) before the request was delivered; it was not re-sent", deviceID, lease, r.Session.Lease, r.Session.Node)
	}
	return nil, status.Errorf(codes.Unavailable, "device %s: session %d is not held by node %s", deviceID, lease, s.node())
}

// DisconnectDevice implements DeviceService.
func (s *Service) DisconnectDevice(ctx context.Context, req *tetherv1.DisconnectDeviceRequest) (*tetherv1.DisconnectDeviceResponse, error) {
	if err := validID(req.GetDeviceId()); err != nil {
		return nil, err
	}
	r, err := s.store.Get(ctx, req.GetDeviceId())
	if err != nil {
		return nil, storeErr("device "+req.GetDeviceId(), err)
	}
	if r.Session == nil {
		return nil, offlineErr(r)
	}
	if r.Session.Node != s.node() {
		return s.forwardDisconnect(ctx, req, r)
	}
	return s.disconnectLocal(ctx, req, r.Session.Lease)
}

func (s *Service) disconnectLocal(ctx context.Context, req *tetherv1.DisconnectDeviceRequest, lease uint64) (*tetherv1.DisconnectDeviceResponse, error) {
	sess, err := s.localSession(ctx, req.GetDeviceId(), lease)
	if err != nil {
		return nil, err
	}
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
	return &tetherv1.DisconnectDeviceResponse{LeaseId: sess.Lease, Node: s.node()}, nil
}
