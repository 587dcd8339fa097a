package memstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// Defaults for Options.
const (
	DefaultEventRetention  = 10000
	DefaultDeviceRetention = 7 * 24 * time.Hour
)

// Options configures a Store. Zero values mean the defaults.
type Options struct {
	// EventRetention is how many events ReadEvents can still return; older
	// ones are dropped and resuming before them fails with ErrEventsExpired.
	EventRetention int
	// DeviceRetention is how long a device record is kept after its last
	// write (claim, touch, info update, release).
	DeviceRetention time.Duration
	// HistoryLen, HistoryRetention and NeverConnectedRetention: see
	// redisstore.Options (zero values mean the registry defaults).
	HistoryLen              int
	HistoryRetention        time.Duration
	NeverConnectedRetention time.Duration
}

// Store is the in-memory registry.Store.
type Store struct {
	eventRetention  int
	deviceRetention time.Duration
	// epoch tags this store's event ids, so an id from another store (an
	// earlier process) is recognised as a resume point that is not retained.
	epoch int64

	mu        sync.Mutex // guards the following
	closed    bool
	devices   map[string]*device
	ids       []string // sorted ids of devices
	nodes     map[string]node
	events    []registry.Event // retained events, oldest first
	seq       uint64           // sequence of the newest event
	trimmed   uint64           // sequence of the newest dropped event
	wake      chan struct{}    // closed (and replaced) when an event is appended
	nextSweep time.Time

	revoked revocations // the token deny list (revocations.go)
	jobs    jobs        // jobs and their results (jobs.go)

	fleet fleetState // history, node renewals (fleet.go)
}

type device struct {
	rec     registry.Record // as stored: Session may sit on a dead node
	expires time.Time
	claimID string // the ClaimID that made the current session ("" after Remirror)
	// preLabels are the labels of a pre-registration, kept under the
	// info's own labels.
	preLabels map[string]string
}

type node struct {
	addr    string
	expires time.Time
}

var _ registry.Store = (*Store)(nil)

// lastEpoch makes epochs unique within the process even when two stores are
// created at the same instant (the fake clock of a synctest bubble).
var lastEpoch atomic.Int64

// New returns an empty store.
func New(opts Options) *Store {
	if opts.EventRetention <= 0 {
		opts.EventRetention = DefaultEventRetention
	}
	if opts.DeviceRetention <= 0 {
		opts.DeviceRetention = DefaultDeviceRetention
	}
	epoch := time.Now().UnixNano()
	for {
		last := lastEpoch.Load()
		if epoch <= last {
			epoch = last + 1
		}
		if lastEpoch.CompareAndSwap(last, epoch) {
			break
		}
	}
	return &Store{
		fleet:           newFleetState(opts),
		eventRetention:  opts.EventRetention,
		deviceRetention: opts.DeviceRetention,
		epoch:           epoch,
		devices:         make(map[string]*device),
		nodes:           make(map[string]node),
		wake:            make(chan struct{}),
	}
}

var errClosed = fmt.Errorf("memstore closed: %w", registry.ErrUnavailable)

// Claim implements registry.Store.
func (s *Store) Claim(ctx context.Context, req registry.ClaimRequest) (registry.Claimed, error) {
	if err := ctx.Err(); err != nil {
		return registry.Claimed{}, err
	}
	if req.DeviceID == "" {
		return registry.Claimed{}, errors.New("memstore: claim: empty device id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return registry.Claimed{}, errClosed
	}
	now := time.Now()
	s.sweepLocked(now)

	d := s.deviceLocked(req.DeviceID, now)
	if d == nil {
		d = s.newDeviceLocked(req.DeviceID, req.Now)
	}
	rec := &d.rec
	if req.ClaimID != "" && d.claimID == req.ClaimID && rec.Session != nil {
		return registry.Claimed{Lease: rec.Session.Lease, Again: true}, nil
	}
	lease := registry.NextLease(rec.Lease, now, registry.ClaimFloor(req))
	verdict := registry.RestartVerdict(rec.Info.GetBootId(), req.Info.GetBootId())

	var out registry.Claimed
	if old := rec.Session; old != nil {
		end := &registry.Disconnect{
			Lease:   old.Lease,
			Node:    old.Node,
			Reason:  tetherv1.DisconnectReason_DISCONNECT_REASON_REPLACED,
			Time:    req.Now,
			Message: fmt.Sprintf("replaced by lease %d on node %s", lease, req.Node),
		}
		typ := tetherv1.EventType_EVENT_TYPE_REPLACED
		if !s.nodeAliveLocked(old.Node, now) {
			end = registry.NodeLost(old)
			typ = tetherv1.EventType_EVENT_TYPE_OFFLINE
		}
		end.Restart = verdict
		rec.LastDisconnect = end
		s.pushHistoryLocked(req.DeviceID, old, *end, now)
		c := *end
		out.Replaced = &c
		s.appendLocked(registry.Event{Type: typ, DeviceID: req.DeviceID, Lease: end.Lease, Reason: end.Reason, Time: end.Time, Node: end.Node})
	} else if ld := rec.LastDisconnect; ld != nil && ld.Lease == rec.Lease {
		ld.Restart = verdict
		s.historyVerdictLocked(req.DeviceID, ld.Lease, verdict, now)
	}

	if rec.FirstSeen.IsZero() {
		rec.FirstSeen = req.Now // a pre-registered record's first claim
	}
	rec.Lease = lease
	rec.Session = &registry.Session{
		Lease:       lease,
		Node:        req.Node,
		RemoteAddr:  req.RemoteAddr,
		ConnectedAt: req.Now,
		LastSeen:    req.Now,
		Mode:        req.Mode,
	}
	if req.Info != nil {
		rec.Info = req.Info // read-only from here on (registry.Leases); readers get copies
	}
	d.expires = now.Add(s.deviceRetention)
	d.claimID = req.ClaimID
	s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceID: req.DeviceID, Lease: lease, Time: req.Now, Node: req.Node})
	out.Lease = lease
	return out, nil
}

// Touch implements registry.Store.
func (s *Store) Touch(ctx context.Context, touches []registry.Touch) (registry.TouchResult, error) {
	var res registry.TouchResult
	if err := ctx.Err(); err != nil {
		return res, unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return res, errClosed
	}
	now := time.Now()
	for _, t := range touches {
		d, err := s.currentLocked(t.DeviceID, t.Lease, now)
		switch {
		case errors.Is(err, registry.ErrStaleLease):
			res.Stale = append(res.Stale, t)
			continue
		case err != nil:
			res.Missing = append(res.Missing, t)
			continue
		}
		d.rec.Session.LastSeen = t.LastSeen
		d.rec.Session.RTT = t.RTT
		d.expires = now.Add(s.deviceRetention)
	}
	return res, nil
}

// unknown marks a context error as an unknown outcome.
func unknown(err error) error {
	return fmt.Errorf("%w: %w", registry.ErrUnavailable, err)
}

// UpdateInfo implements registry.Store.
func (s *Store) UpdateInfo(ctx context.Context, deviceID string, lease uint64, info *tetherv1.DeviceInfo) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	now := time.Now()
	d, err := s.currentLocked(deviceID, lease, now)
	if err != nil {
		return fmt.Errorf("update info of %s with lease %d: %w", deviceID, lease, err)
	}
	d.rec.Info = info // read-only from here on (registry.Leases)
	d.expires = now.Add(s.deviceRetention)
	s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_INFO_CHANGED, DeviceID: deviceID, Lease: lease, Time: now, Node: d.rec.Session.Node})
	return nil
}

// Release implements registry.Store.
func (s *Store) Release(ctx context.Context, deviceID string, end registry.Disconnect) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	now := time.Now()
	d, err := s.currentLocked(deviceID, end.Lease, now)
	if err != nil {
		return fmt.Errorf("release %s lease %d: %w", deviceID, end.Lease, err)
	}
	s.releaseLocked(d, end, now)
	return nil
}

// ReleaseClaim implements registry.Store.
func (s *Store) ReleaseClaim(ctx context.Context, deviceID, claimID string, end registry.Disconnect) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	now := time.Now()
	d := s.deviceLocked(deviceID, now)
	if claimID == "" || d == nil || d.rec.Session == nil || d.claimID != claimID {
		return fmt.Errorf("release claim %s of %s: %w", claimID, deviceID, registry.ErrMissing)
	}
	end.Lease = d.rec.Session.Lease
	s.releaseLocked(d, end, now)
	return nil
}

// Reconcile implements registry.Store. The whole registry is in memory, so
// it checks every record that names node and every held session.
func (s *Store) Reconcile(ctx context.Context, nodeName string, held []registry.Held, orphan func(deviceID string, lease uint64) bool) (registry.Reconciled, error) {
	var out registry.Reconciled
	if err := ctx.Err(); err != nil {
		return out, unknown(err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return out, errClosed
	}
	now := time.Now()
	holds := make(map[string]uint64, len(held))
	for _, h := range held {
		holds[h.DeviceID] = h.Lease
		out.Checked++
		d := s.deviceLocked(h.DeviceID, now)
		switch {
		case d != nil && d.rec.Lease > h.Lease:
			out.Stale = append(out.Stale, h)
		case d == nil || d.rec.Lease < h.Lease || d.rec.Session == nil || d.rec.Session.Lease != h.Lease || d.rec.Session.Node != nodeName:
			out.Missing = append(out.Missing, h)
		}
	}
	type cand struct {
		id    string
		lease uint64
	}
	var cands []cand
	for _, id := range s.ids {
		d := s.deviceLocked(id, now)
		if d == nil || d.rec.Session == nil || d.rec.Session.Node != nodeName {
			continue
		}
		out.Checked++
		if l, ok := holds[id]; !ok || l != d.rec.Session.Lease {
			cands = append(cands, cand{id, d.rec.Session.Lease})
		}
	}
	s.mu.Unlock()
	// The callback runs without the store's lock (it takes the caller's).
	for _, c := range cands {
		if !orphan(c.id, c.lease) {
			continue
		}
		s.mu.Lock()
		if d, err := s.currentLocked(c.id, c.lease, time.Now()); err == nil && d.rec.Session.Node == nodeName {
			end := registry.Orphaned(d.rec.Session, time.Now())
			s.releaseLocked(d, end, time.Now())
			out.Orphaned = append(out.Orphaned, end)
			out.OrphanedIDs = append(out.OrphanedIDs, c.id)
		}
		s.mu.Unlock()
	}
	return out, nil
}

// releaseLocked ends d's current session with end.
func (s *Store) releaseLocked(d *device, end registry.Disconnect, now time.Time) {
	deviceID := d.rec.DeviceID
	if end.Node == "" {
		end.Node = d.rec.Session.Node
	}
	s.pushHistoryLocked(deviceID, d.rec.Session, end, now)
	d.rec.Session = nil
	d.claimID = ""
	d.rec.LastDisconnect = &end
	d.expires = now.Add(s.deviceRetention)
	s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_OFFLINE, DeviceID: deviceID, Lease: end.Lease, Reason: end.Reason, Time: end.Time, Node: end.Node})
}

// Get implements registry.Store.
func (s *Store) Get(ctx context.Context, deviceID string) (registry.Record, error) {
	if err := ctx.Err(); err != nil {
		return registry.Record{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return registry.Record{}, errClosed
	}
	now := time.Now()
	d := s.deviceLocked(deviceID, now)
	if d == nil {
		return registry.Record{}, fmt.Errorf("get %s: %w", deviceID, registry.ErrNotFound)
	}
	return s.readLocked(d, now), nil
}

// List implements registry.Store. The in-memory index is scanned to the end
// when filters are selective, so a page is short only at the end.
func (s *Store) List(ctx context.Context, q registry.ListQuery) (registry.ListPage, error) {
	if err := ctx.Err(); err != nil {
		return registry.ListPage{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return registry.ListPage{}, errClosed
	}
	now := time.Now()
	s.sweepLocked(now)
	limit := q.PageLimit()
	i, found := slices.BinarySearch(s.ids, q.After)
	if found {
		i++
	}
	var page registry.ListPage
	for ; i < len(s.ids); i++ {
		d := s.devices[s.ids[i]]
		if d == nil || !now.Before(d.expires) {
			continue // removed by the next sweep
		}
		r := s.readLocked(d, now)
		if !q.Matches(r) {
			continue
		}
		page.Records = append(page.Records, r)
		if len(page.Records) == limit {
			if i+1 < len(s.ids) {
				page.Next = r.DeviceID
			}
			break
		}
	}
	return page, nil
}

// ReadEvents implements registry.Store. Event ids are "<epoch>-<sequence>";
// an id from another store instance (e.g. before a restart) is reported as
// ErrEventsExpired, since the events after it are gone.
func (s *Store) ReadEvents(ctx context.Context, after string, limit int, wait time.Duration) ([]registry.Event, error) {
	if limit <= 0 {
		limit = registry.DefaultListLimit
	}
	var afterSeq uint64
	if after != "" {
		epoch, seq, ok := parseEventID(after)
		if !ok || epoch != s.epoch {
			return nil, fmt.Errorf("resume after event %q: not from this store: %w", after, registry.ErrEventsExpired)
		}
		afterSeq = seq
	}
	var timeout <-chan time.Time
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errClosed
		}
		if after != "" && afterSeq > s.seq {
			s.mu.Unlock()
			return nil, fmt.Errorf("resume after event %q: the newest event is %s: %w", after, s.eventID(s.seq), registry.ErrEventsExpired)
		}
		if after != "" && afterSeq < s.trimmed {
			s.mu.Unlock()
			return nil, fmt.Errorf("resume after event %q: events up to %s were dropped: %w", after, s.eventID(s.trimmed), registry.ErrEventsExpired)
		}
		first := s.seq - uint64(len(s.events)) + 1 // sequence of events[0]
		var out []registry.Event
		if afterSeq < s.seq {
			start := 0
			if afterSeq >= first {
				start = int(afterSeq - first + 1)
			}
			n := min(len(s.events)-start, limit)
			out = slices.Clone(s.events[start : start+n])
		}
		wake := s.wake
		s.mu.Unlock()
		if len(out) > 0 || wait <= 0 {
			return out, nil
		}
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wake:
		case <-timeout:
			wait = 0 // one last look, then return
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// LastEventID implements registry.Store.
func (s *Store) LastEventID(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errClosed
	}
	if s.seq == 0 {
		return "", nil
	}
	return s.eventID(s.seq), nil
}

// KeepNodeAlive implements registry.Store.
func (s *Store) KeepNodeAlive(ctx context.Context, nodeName, addr string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ttl <= 0 {
		return fmt.Errorf("memstore: keep node %s alive: ttl %v is not positive", nodeName, ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	s.nodes[nodeName] = node{addr: addr, expires: time.Now().Add(ttl)}
	s.fleet.renewed[nodeName] = time.Now()
	return nil
}

// NodeAddr implements registry.Store.
func (s *Store) NodeAddr(ctx context.Context, nodeName string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errClosed
	}
	if !s.nodeAliveLocked(nodeName, time.Now()) {
		return "", fmt.Errorf("node %s: %w", nodeName, registry.ErrNotFound)
	}
	return s.nodes[nodeName].addr, nil
}

// DropNode implements registry.Store.
func (s *Store) DropNode(ctx context.Context, nodeName string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	delete(s.nodes, nodeName)
	return nil
}

// Remirror implements registry.Store.
func (s *Store) Remirror(ctx context.Context, sessions []registry.Live) (registry.RemirrorResult, error) {
	var res registry.RemirrorResult
	if err := ctx.Err(); err != nil {
		return res, unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return res, errClosed
	}
	now := time.Now()
	for _, l := range sessions {
		if l.DeviceID == "" || l.Lease == 0 {
			res.Stale = append(res.Stale, l)
			continue
		}
		d := s.deviceLocked(l.DeviceID, now)
		if d == nil {
			d = s.newDeviceLocked(l.DeviceID, l.ConnectedAt)
		}
		rec := &d.rec
		if rec.Lease > l.Lease {
			res.Stale = append(res.Stale, l)
			continue
		}
		if rec.Session == nil || rec.Session.Lease != l.Lease {
			d.claimID = ""
		}
		wasCurrent := rec.Session != nil && rec.Session.Lease == l.Lease
		rec.Lease = l.Lease
		rec.Session = &registry.Session{
			Lease:       l.Lease,
			Node:        l.Node,
			RemoteAddr:  l.RemoteAddr,
			ConnectedAt: l.ConnectedAt,
			LastSeen:    l.LastSeen,
			RTT:         l.RTT,
			Mode:        l.Mode,
		}
		if l.Info != nil {
			rec.Info = l.Info
		}
		d.expires = now.Add(s.deviceRetention)
		if !wasCurrent {
			s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_ONLINE, DeviceID: l.DeviceID, Lease: l.Lease, Time: l.ConnectedAt, Node: l.Node})
		}
	}
	return res, nil
}

// Close implements registry.Store: later calls fail with ErrUnavailable and
// waiting readers return.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		close(s.wake)
	}
	return nil
}

// deviceLocked returns the device's entry, or nil when unknown or past its
// retention.
func (s *Store) deviceLocked(id string, now time.Time) *device {
	d := s.devices[id]
	if d == nil || !now.Before(d.expires) {
		return nil
	}
	return d
}

// newDeviceLocked replaces the device's entry (absent or past retention) with
// an empty record.
func (s *Store) newDeviceLocked(id string, firstSeen time.Time) *device {
	d := &device{rec: registry.Record{DeviceID: id, FirstSeen: firstSeen}}
	s.devices[id] = d
	if i, found := slices.BinarySearch(s.ids, id); !found {
		s.ids = slices.Insert(s.ids, i, id)
	}
	return d
}

// currentLocked returns the device's entry when lease is its current
// session's; otherwise ErrStaleLease when a newer lease was issued, else
// ErrMissing (no record, or it does not show lease as current).
func (s *Store) currentLocked(id string, lease uint64, now time.Time) (*device, error) {
	d := s.deviceLocked(id, now)
	switch {
	case d != nil && d.rec.Lease > lease:
		return nil, registry.ErrStaleLease
	case d == nil || d.rec.Session == nil || d.rec.Session.Lease != lease:
		return nil, registry.ErrMissing
	}
	return d, nil
}

func (s *Store) nodeAliveLocked(name string, now time.Time) bool {
	n, ok := s.nodes[name]
	return ok && now.Before(n.expires)
}

// readLocked returns a deep copy of d's record as readers see it.
func (s *Store) readLocked(d *device, now time.Time) registry.Record {
	r := d.rec
	if r.Info != nil {
		r.Info = proto.Clone(r.Info).(*tetherv1.DeviceInfo)
	}
	if r.Session != nil {
		c := *r.Session
		r.Session = &c
	}
	if r.LastDisconnect != nil {
		c := *r.LastDisconnect
		r.LastDisconnect = &c
	}
	r.Info = registry.MergeLabels(r.Info, d.preLabels)
	alive := r.Session != nil && s.nodeAliveLocked(r.Session.Node, now)
	return registry.Derive(r, alive)
}

// sweepLocked drops devices past their retention, at most once per
// sweepEvery. Reads already ignore them; this only frees memory.
func (s *Store) sweepLocked(now time.Time) {
	if now.Before(s.nextSweep) {
		return
	}
	s.nextSweep = now.Add(min(s.deviceRetention/10+time.Second, time.Hour))
	ids := s.ids[:0]
	for _, id := range s.ids {
		if d := s.devices[id]; d != nil && now.Before(d.expires) {
			ids = append(ids, id)
			continue
		}
		delete(s.devices, id)
	}
	clear(s.ids[len(ids):])
	s.ids = ids
	s.sweepHistoryLocked(now)
}

func (s *Store) appendLocked(e registry.Event) {
	s.seq++
	e.ID = s.eventID(s.seq)
	s.events = append(s.events, e)
	if over := len(s.events) - s.eventRetention; over > 0 {
		s.trimmed = s.seq - uint64(len(s.events)) + uint64(over)
		clear(s.events[:over])
		s.events = s.events[over:]
	}
	close(s.wake)
	s.wake = make(chan struct{})
}

func (s *Store) eventID(seq uint64) string {
	return strconv.FormatInt(s.epoch, 10) + "-" + strconv.FormatUint(seq, 10)
}

func parseEventID(id string) (epoch int64, seq uint64, ok bool) {
	e, q, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	epoch, err1 := strconv.ParseInt(e, 10, 64)
	seq, err2 := strconv.ParseUint(q, 10, 64)
	return epoch, seq, err1 == nil && err2 == nil
}
