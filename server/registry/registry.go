package registry

import (
	"context"
	"errors"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Errors returned by every Store. Wrap them with fmt.Errorf("...: %w"); test
// with errors.Is.
//
// Every write a session makes (Claim, Touch, UpdateInfo, Release, Remirror)
// has exactly one of four outcomes, and each has one meaning for the
// replica holding the session:
//
//   - Applied (nil): done.
//   - Refused as stale (ErrStaleLease): a higher lease is current for the
//     device — a newer session exists. The only outcome that ends a live
//     session (as REPLACED).
//   - Missing (ErrMissing): the record, or this session's fields, are gone
//     or older than the lease (Redis lost data: a restart without
//     persistence, a failover that lost acknowledged writes, a Cluster shard
//     restarted empty). The session is written back, never ended.
//   - Unknown (ErrUnavailable): a timeout, a connection error or an error
//     reply (OOM, BUSY, READONLY, LOADING, MOVED/ASK, CLUSTERDOWN, ...). The
//     write may or may not have been applied: the session is kept, the call
//     retried, and reconciliation resolves what it left behind.
var (
	// ErrStaleLease: the write names a lease that is no longer the device's
	// current one because a newer lease was issued.
	ErrStaleLease = errors.New("registry: stale lease")
	// ErrMissing: the device's record, or the session's fields in it, are
	// gone or older than the write's lease: the store lost data. Write the
	// session back (Remirror).
	ErrMissing = errors.New("registry: session record missing")
	// ErrNotFound: the device is not known.
	ErrNotFound = errors.New("registry: device not found")
	// ErrUnavailable: the outcome is unknown — the store could not be
	// reached, did not answer in time, or answered with an error reply. A
	// write that failed so may or may not have been applied.
	ErrUnavailable = errors.New("registry: store unavailable (outcome unknown)")
	// ErrEventsExpired: a resume point is older than the retained events.
	ErrEventsExpired = errors.New("registry: events before the resume point are no longer retained")
)

// Store is the registry's storage: every role below, and Close. All
// methods are safe for concurrent use. Consumers take only the role they
// use (the session hub Leases and Nodes, the device API Reader, the event
// feed Events, peer authentication Nodes).
type Store interface {
	Leases
	Reader
	Events
	Nodes

	// Close releases the store's resources (not the registry's records).
	Close() error
}

// Leases is the role of the session hub: the writes that make, renew,
// re-assert and end sessions.
//
// The DeviceInfo a caller passes (ClaimRequest.Info, UpdateInfo, Live.Info)
// is read-only for both sides once passed: a store may keep it as given
// rather than copy it (the embedded store does: a replica then holds one copy
// of each device's info, shared by the session and the record), and the
// caller must not modify it afterwards. Records a store returns are always
// the reader's own copies.
type Leases interface {
	// Claim makes a new session current for req.DeviceID and returns its
	// lease. The lease is strictly greater than every lease the store ever
	// issued for the device, greater than req.MinLease and not below
	// req.Now in microseconds (so a store whose own clock or data went back
	// cannot issue a lease below one issued before). A session that was
	// current is ended with reason REPLACED (returned in Claimed.Replaced).
	// The new Hello's boot id decides the Restart verdict recorded on the
	// previous session's end.
	//
	// Claim is idempotent per req.ClaimID: when the current session was
	// made by the same claim id (an earlier call whose reply was lost), it
	// is returned again with Claimed.Again set and nothing changes.
	Claim(ctx context.Context, req ClaimRequest) (Claimed, error)

	// Touch records last-seen time and RTT for many sessions at once (a
	// batched, periodic mirror of liveness). Each entry has its own outcome
	// (see TouchResult); err reports a batch whose outcome is unknown as a
	// whole.
	Touch(ctx context.Context, touches []Touch) (TouchResult, error)

	// UpdateInfo replaces the device info if lease is current; ErrStaleLease
	// when a newer lease exists, ErrMissing when the session's record is
	// gone.
	UpdateInfo(ctx context.Context, deviceID string, lease uint64, info *tetherv1.DeviceInfo) error

	// Release ends the session if end.Lease is current: the device goes
	// offline and end is recorded as its last disconnect. ErrStaleLease
	// when a newer lease exists; ErrMissing when there is nothing to end
	// (the record is gone, or does not show end.Lease as current).
	Release(ctx context.Context, deviceID string, end Disconnect) error

	// ReleaseClaim ends the current session only if it was made by claimID
	// (end.Lease is ignored; the session's own lease is recorded). It
	// resolves a Claim whose outcome was unknown and whose session never
	// started: applied or not, afterwards no record is left by that claim.
	// It returns nil when it ended the session, ErrMissing when the claim is
	// not (or no longer) current.
	ReleaseClaim(ctx context.Context, deviceID, claimID string, end Disconnect) error

	// Reconcile proves that the registry matches what node holds (held:
	// one entry per live session of node). Records that name node with a
	// lease it does not hold are ended with reason ORPHANED, each only after
	// orphan(deviceID, lease) confirmed it (the caller checks that the lease
	// is still not held and no claim for the device is in flight). Held
	// sessions that the registry lacks, or records with an older lease, are
	// returned in Missing (the caller writes them back); held sessions whose
	// device has a newer lease are returned in Stale. A store may skip
	// checking held sessions whose per-node index entry matches (Touch
	// verifies those).
	Reconcile(ctx context.Context, node string, held []Held, orphan func(deviceID string, lease uint64) bool) (Reconciled, error)

	// Remirror re-asserts live sessions after the store lost data (e.g. a
	// Redis restart without persistence). Each session is written back with
	// its own lease, only where the store holds no newer lease for the device.
	// It returns the sessions refused because a newer lease exists (Stale)
	// and those whose outcome is unknown (Unknown: an error reply).
	Remirror(ctx context.Context, sessions []Live) (RemirrorResult, error)
}

// Reader is the role of the device API and the fleet router: reading
// devices.
type Reader interface {
	// Get returns one device.
	Get(ctx context.Context, deviceID string) (Record, error)

	// List returns a page of devices ordered by id.
	List(ctx context.Context, q ListQuery) (ListPage, error)
}

// Events is the role of the event feed and the watch catch-up: reading
// presence events.
type Events interface {
	// ReadEvents returns up to limit events after the event id after ("" =
	// from the oldest retained), waiting up to wait for one to arrive when
	// none is available. It returns ErrEventsExpired when events after the
	// resume point have been trimmed away.
	ReadEvents(ctx context.Context, after string, limit int, wait time.Duration) ([]Event, error)

	// LastEventID returns the id of the newest event ("" if none), so a
	// watcher can start "from now".
	LastEventID(ctx context.Context) (string, error)
}

// Nodes is the role of node liveness: the session hub renews and drops
// its node, the router and peer authentication look nodes up.
type Nodes interface {
	// KeepNodeAlive renews the node's liveness for ttl and records addr as
	// its peer address. Sessions on a node whose liveness lapsed read as
	// offline (reason NODE_LOST).
	KeepNodeAlive(ctx context.Context, node, addr string, ttl time.Duration) error

	// NodeAddr returns the peer address of a live node, or ErrNotFound.
	NodeAddr(ctx context.Context, node string) (string, error)

	// DropNode ends the node's liveness at once (graceful shutdown).
	DropNode(ctx context.Context, node string) error
}

// OutcomeOf names the outcome class of a store write's error: "applied"
// (nil), "stale", "missing" or "unknown" (anything else, including context
// errors: the write may have been applied).
func OutcomeOf(err error) string {
	switch {
	case err == nil:
		return "applied"
	case errors.Is(err, ErrStaleLease):
		return "stale"
	case errors.Is(err, ErrMissing):
		return "missing"
	}
	return "unknown"
}

// Epocher is implemented by stores that can tell when the server behind
// them changed (a restart, a failover): the moments acknowledged writes can
// be lost. The value is opaque; a change is what matters.
type Epocher interface {
	Epoch(ctx context.Context) (string, error)
}

// IndexSweeper is implemented by stores whose device index needs cleaning
// of expired devices in the background.
type IndexSweeper interface {
	// SweepIndex checks up to n index entries after cursor and removes
	// those of expired devices; it returns the cursor to continue from
	// ("" at the end) and how many it removed.
	SweepIndex(ctx context.Context, cursor string, n int) (next string, removed int, err error)
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
	// ClaimID identifies this claim (random, unique per Hello). A retry of
	// a claim whose reply was lost carries the same id and gets the same
	// lease back; ReleaseClaim undoes exactly this claim.
	ClaimID string
}

// Claimed is the result of a Claim.
type Claimed struct {
	Lease uint64
	// Again is set when the claim had already been applied by an earlier
	// call with the same ClaimID (its reply was lost).
	Again bool
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

// TouchResult sorts the entries of a Touch batch that were not applied by
// outcome. Entries in none of the lists were applied.
type TouchResult struct {
	// Stale: a newer lease is current for the device (end the session).
	Stale []Touch
	// Missing: the record or the session's fields are gone or older (write
	// the session back).
	Missing []Touch
	// Unknown: the entry got an error reply (keep the session, retry).
	Unknown []Touch
}

// RemirrorResult sorts the sessions of a Remirror call that were not
// written back.
type RemirrorResult struct {
	// Stale: a newer lease exists for the device.
	Stale []Live
	// Unknown: an error reply; the write may or may not have applied.
	Unknown []Live
}

// Held is a session a node holds, as given to Reconcile.
type Held struct {
	DeviceID string
	Lease    uint64
}

// Reconciled is what Reconcile found and did.
type Reconciled struct {
	// Orphaned are the records Reconcile ended (reason ORPHANED).
	Orphaned []Disconnect
	// OrphanedIDs are the device ids of Orphaned, in the same order.
	OrphanedIDs []string
	// Missing are held sessions the registry lacks or has older: write
	// them back.
	Missing []Held
	// Stale are held sessions whose device has a newer lease.
	Stale []Held
	// Checked is how many records Reconcile read.
	Checked int
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
