package deviceapi

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/feed"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/router"
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
	DefaultCommandTimeout = router.DefaultCommandTimeout
	MaxCommandTimeout     = router.MaxCommandTimeout
	MaxCommandArgs        = router.MaxCommandArgs
	MaxCommandArgBytes    = router.MaxCommandArgBytes
	MaxCommandNameBytes   = router.MaxCommandNameBytes
)

// Config configures the Service.
type Config struct {
	// WatchHeartbeat is how often an idle watch stream gets a HEARTBEAT
	// event, so that proxies do not cut it. Default 15s.
	WatchHeartbeat time.Duration
	// OutputCap bounds command output relayed to callers. Default 64 KiB.
	OutputCap int
	// Peers reaches other replicas for devices they hold; nil means
	// requests for such devices answer UNAVAILABLE. Used when Router is nil.
	Peers *router.Peers
	// Router routes operations to sessions; nil builds one from the hub,
	// the store and Peers.
	Router *router.Router
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
	// WatchSendTimeout bounds one message's Send on a WatchDevices stream.
	// A client that reads nothing makes HTTP/2 flow control hold the Send,
	// and without a bound its watch (slot, goroutine, buffers) would stay
	// until it read or left; after it the stream ends with UNAVAILABLE.
	// Default DefaultWatchSendTimeout; negative means no bound (Send runs
	// on the handler's goroutine, as before).
	WatchSendTimeout time.Duration
}

// DefaultWatchSendTimeout is Config.WatchSendTimeout's default, the same as
// the JSON gateway's write deadline for watches.
const DefaultWatchSendTimeout = 30 * time.Second

// Service implements tetherv1.DeviceServiceServer.
type Service struct {
	tetherv1.UnimplementedDeviceServiceServer
	cfg     Config
	store   Store
	router  *router.Router
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

// Store is what the device API reads of the registry: devices
// (registry.Reader), presence events for watches (registry.Events) and,
// through the router, nodes (registry.Nodes).
type Store interface {
	registry.Reader
	registry.Events
	registry.Nodes
}

// New creates the Service.
func New(cfg Config, store Store, hub *session.Hub, m *metrics.Metrics) *Service {
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
	if cfg.WatchSendTimeout == 0 {
		cfg.WatchSendTimeout = DefaultWatchSendTimeout
	}
	cfg.Feed.Buffer = cfg.WatchBuffer
	if cfg.Feed.Logger == nil {
		cfg.Feed.Logger = cfg.Logger
	}
	rt := cfg.Router
	if rt == nil {
		rt = router.New(router.Config{Hub: hub, Registry: store, Peers: cfg.Peers, OutputCap: cfg.OutputCap, Metrics: m, Logger: cfg.Logger})
	}
	closing, cancel := context.WithCancel(context.Background())
	return &Service{cfg: cfg, store: store, router: rt, metrics: m, closing: closing, close: cancel,
		feed:        feed.New(store, cfg.Feed),
		snapshotSem: make(chan struct{}, cfg.MaxSnapshotReads),
		watches:     watchSlots{maxTotal: cfg.MaxWatchers, maxPerKey: cfg.MaxWatchersPerKey, perKey: map[string]int{}},
		wm:          newWatchMetrics(),
	}
}

// storeErr maps a registry error to a gRPC status.
func storeErr(op string, err error) error { return router.StoreErr(op, err) }

func validID(id string) error { return router.ValidID(id) }

// device converts a record with this replica's live session state merged in.
func (s *Service) device(r registry.Record) *tetherv1.Device { return deviceProto(s.router.Merge(r)) }

// Router is the service's fleet router (the PeerService and the job
// runner use it too).
func (s *Service) Router() *router.Router { return s.router }

// GetDevice implements DeviceService.
func (s *Service) GetDevice(ctx context.Context, req *tetherv1.GetDeviceRequest) (*tetherv1.GetDeviceResponse, error) {
	if err := validID(req.GetDeviceId()); err != nil {
		return nil, err
	}
	r, err := s.store.Get(ctx, req.GetDeviceId())
	if err != nil {
		return nil, storeErr("device "+req.GetDeviceId(), err)
	}
	return &tetherv1.GetDeviceResponse{Device: s.device(r)}, nil
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
		d := s.device(r)
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

// SendCommand implements DeviceService.
func (s *Service) SendCommand(ctx context.Context, req *tetherv1.SendCommandRequest) (*tetherv1.SendCommandResponse, error) {
	start := time.Now()
	res, err := s.router.Run(ctx, router.Op{Command: req})
	s.metrics.Command(status.Code(err).String(), time.Since(start))
	return res.Command, err
}

// DisconnectDevice implements DeviceService.
func (s *Service) DisconnectDevice(ctx context.Context, req *tetherv1.DisconnectDeviceRequest) (*tetherv1.DisconnectDeviceResponse, error) {
	res, err := s.router.Run(ctx, router.Op{Disconnect: req})
	return res.Disconnect, err
}
