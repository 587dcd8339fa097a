package registry

import (
	"context"
	"errors"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Errors returned by every Store. Wrap them with fmt.Errorf("...: %w"); test
// with errors.Is.
var (
	// ErrStaleLease: the write names a lease that is no longer the device's
	// current one (a newer session took over, or the session already ended).
	ErrStaleLease = errors.New("registry: stale lease")
	// ErrNotFound: the device is not known.
	ErrNotFound = errors.New("registry: device not found")
	// ErrUnavailable: the backing store cannot be reached.
	ErrUnavailable = errors.New("registry: store unavailable")
	// ErrEventsExpired: a resume point is older than the retained events.
	ErrEventsExpired = errors.New("registry: events before the resume point are no longer retained")
)

// Store is the registry's storage. All methods are safe for concurrent use.
type Store interface {
	// Claim makes a new session current for req.DeviceID and returns its
	// lease. The lease is strictly greater than every lease the store ever
	// issued for the device and greater than req.MinLease. A session that was
	// current is ended with reason REPLACED (returned in Claimed.Replaced).
	// The new Hello's boot id decides the Restart verdict recorded on the
	// previous session's end.
	Claim(ctx context.Context, req ClaimRequest) (Claimed, error)

	// Touch records last-seen time and RTT for many sessions at once (a
	// batched, periodic mirror of liveness). Entries whose lease is no longer
	// current are skipped and returned in stale; they do not fail the batch.
	Touch(ctx context.Context, touches []Touch) (stale []Touch, err error)

	// UpdateInfo replaces the device info if lease is current.
	UpdateInfo(ctx context.Context, deviceID string, lease uint64, info *tetherv1.DeviceInfo) error

	// Release ends the session if end.Lease is current: the device goes
	// offline and end is recorded as its last disconnect.
	Release(ctx context.Context, deviceID string, end Disconnect) error

	// Get returns one device.
	Get(ctx context.Context, deviceID string) (Record, error)

	// List returns a page of devices ordered by id.
	List(ctx context.Context, q ListQuery) (ListPage, error)

	// ReadEvents returns up to limit events after the event id after ("" =
	// from the oldest retained), waiting up to wait for one to arrive when
	// none is available. It returns ErrEventsExpired when events after the
	// resume point have been trimmed away.
	ReadEvents(ctx context.Context, after string, limit int, wait time.Duration) ([]Event, error)

	// LastEventID returns the id of the newest event ("" if none), so a
	// watcher can start "from now".
	LastEventID(ctx context.Context) (string, error)

	// KeepNodeAlive renews the node's liveness for ttl and records addr as
	// its peer address. Sessions on a node whose liveness lapsed read as
	// offline (reason NODE_LOST).
	KeepNodeAlive(ctx context.Context, node, addr string, ttl time.Duration) error

	// NodeAddr returns the peer address of a live node, or ErrNotFound.
	NodeAddr(ctx context.Context, node string) (string, error)

	// DropNode ends the node's liveness at once (graceful shutdown).
	DropNode(ctx context.Context, node string) error

	// Remirror re-asserts live sessions after the store lost data (e.g. a
	// Redis restart without persistence). Each session is written back with
	// its own lease, only where the store holds no newer lease for the device.
	// It returns the sessions that were refused because a newer lease exists.
	Remirror(ctx context.Context, sessions []Live) (stale []Live, err error)

	// Close releases the store's resources (not the registry's records).
	Close() error
}

// ClaimRequest describes a new session.
type ClaimRequest struct {
	DeviceID   string
	Node       string
	RemoteAddr string
	Mode       tetherv1.LivenessMode
	Info       *tetherv1.DeviceInfo
	Now        time.Time
	// MinLease is a floor for the new lease: the caller's knowledge of leases
	// still held (e.g. a local session for the same device).
	MinLease uint64
}

// Claimed is the result of a Claim.
type Claimed struct {
	Lease uint64
	// Replaced is the session that was current and is now ended as REPLACED,
	// or nil.
	Replaced *Disconnect
}

// Touch is one liveness update.
type Touch struct {
	DeviceID string
	Lease    uint64
	LastSeen time.Time
	RTT      time.Duration
}

// Live is a session held by a node, as re-asserted by Remirror.
type Live struct {
	DeviceID    string
	Lease       uint64
	Node        string
	RemoteAddr  string
	Mode        tetherv1.LivenessMode
	Info        *tetherv1.DeviceInfo
	ConnectedAt time.Time
	LastSeen    time.Time
	RTT         time.Duration
}

// Session is a device's current session as the store records it.
type Session struct {
	Lease       uint64
	Node        string
	RemoteAddr  string
	ConnectedAt time.Time
	LastSeen    time.Time
	RTT         time.Duration
	Mode        tetherv1.LivenessMode
}

// Disconnect is how a session ended.
type Disconnect struct {
	Lease   uint64
	Node    string
	Reason  tetherv1.DisconnectReason
	Time    time.Time
	Message string
	Restart tetherv1.DeviceRestart
}

// Record is the registry's view of one device.
type Record struct {
	DeviceID string
	Info     *tetherv1.DeviceInfo
	// Session is the current session, nil when offline. A store never
	// returns a session whose node's liveness has lapsed: such a record reads
	// as offline with a NODE_LOST LastDisconnect.
	Session        *Session
	LastDisconnect *Disconnect
	FirstSeen      time.Time
	// Lease is the highest lease issued for the device (current or last).
	Lease uint64
}

// Online reports whether the device has a live session.
func (r Record) Online() bool { return r.Session != nil }

// Presence filters List.
type Presence int

// Presence values.
const (
	PresenceAny Presence = iota
	PresenceOnline
	PresenceOffline
)

// ListQuery selects a page of devices.
type ListQuery struct {
	// After is the last device id of the previous page ("" = from the start).
	After    string
	Limit    int
	Presence Presence
	// Labels must all match the device info's labels.
	Labels map[string]string
	// Selector must match too (ParseSelector; nil matches everything).
	Selector Selector
}

// ListPage is one page of devices.
type ListPage struct {
	Records []Record
	// Next is the id to pass as After for the next page; "" at the end.
	Next string
}

// EventType mirrors tetherv1.EventType for stored events.
type EventType = tetherv1.EventType

// Event is one presence event.
type Event struct {
	ID       string
	Type     EventType
	DeviceID string
	Lease    uint64
	Reason   tetherv1.DisconnectReason
	Time     time.Time
	Node     string
}
