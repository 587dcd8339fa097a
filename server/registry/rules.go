package registry

import (
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Rules every Store applies the same way. They live here, next to the
// contract, so the stores cannot drift apart.

// List page sizes.
const (
	// DefaultListLimit is the page size when ListQuery.Limit is zero or
	// negative.
	DefaultListLimit = 100
	// MaxListLimit caps ListQuery.Limit.
	MaxListLimit = 1000
)

// PageLimit returns q.Limit clamped to [1, MaxListLimit], DefaultListLimit
// when unset.
func (q ListQuery) PageLimit() int {
	switch {
	case q.Limit <= 0:
		return DefaultListLimit
	case q.Limit > MaxListLimit:
		return MaxListLimit
	}
	return q.Limit
}

// Matches reports whether r passes the query's Presence and Labels filters.
// r must already be derived (a session on a lapsed node reads as offline).
func (q ListQuery) Matches(r Record) bool {
	switch q.Presence {
	case PresenceOnline:
		if !r.Online() {
			return false
		}
	case PresenceOffline:
		if r.Online() {
			return false
		}
	}
	return MatchLabels(r.Info, q.Labels) && q.Selector.Matches(r.Info.GetLabels())
}

// MatchLabels reports whether info carries every label in want with the same
// value. An empty want matches everything.
func MatchLabels(info *tetherv1.DeviceInfo, want map[string]string) bool {
	if len(want) == 0 {
		return true
	}
	have := info.GetLabels()
	for k, v := range want {
		got, ok := have[k]
		if !ok || got != v {
			return false
		}
	}
	return true
}

// RestartVerdict compares the boot id stored for a device with the boot id
// of its new Hello: both known and different means the device restarted,
// equal means only the connection was lost, anything else is unknown.
func RestartVerdict(storedBootID, newBootID string) tetherv1.DeviceRestart {
	switch {
	case storedBootID == "" || newBootID == "":
		return tetherv1.DeviceRestart_DEVICE_RESTART_UNSPECIFIED
	case storedBootID == newBootID:
		return tetherv1.DeviceRestart_DEVICE_RESTART_SAME_BOOT
	default:
		return tetherv1.DeviceRestart_DEVICE_RESTART_RESTARTED
	}
}

// NextLease allocates a lease: max(highest+1, now in microseconds since the
// Unix epoch, minLease+1). The time component keeps leases increasing when
// the store lost its record of the highest lease (a restart without
// persistence). The Redis store computes the same formula in Lua with the
// Redis clock.
func NextLease(highest uint64, now time.Time, minLease uint64) uint64 {
	lease := highest + 1
	if us := now.UnixMicro(); us > 0 && uint64(us) > lease {
		lease = uint64(us)
	}
	if minLease+1 > lease {
		lease = minLease + 1
	}
	return lease
}

// ClaimFloor is the floor a claim's lease must exceed: the caller's MinLease
// and the claiming replica's clock (req.Now in microseconds). With the
// store's own clock in NextLease, a lease can go backwards only if the store
// lost the device's record and both the store's clock and the claiming
// replica's clock are behind the clock that issued the previous lease.
func ClaimFloor(req ClaimRequest) uint64 {
	floor := req.MinLease
	if us := req.Now.UnixMicro(); us > 0 && uint64(us) > floor {
		floor = uint64(us)
	}
	return floor
}

// Orphaned is the end Reconcile records for a session whose node does not
// hold it.
func Orphaned(s *Session, now time.Time) Disconnect {
	return Disconnect{
		Lease:   s.Lease,
		Node:    s.Node,
		Reason:  tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED,
		Time:    now,
		Message: "node " + s.Node + " does not hold this session (a lost claim reply or a lost release); ended by reconciliation",
	}
}

// NodeLost is the end a store reports for a session whose node's liveness
// lapsed: reason NODE_LOST at the best estimate of when it was lost (the
// last recorded sign of life).
func NodeLost(s *Session) *Disconnect {
	t := s.LastSeen
	if t.IsZero() {
		t = s.ConnectedAt
	}
	return &Disconnect{
		Lease:   s.Lease,
		Node:    s.Node,
		Reason:  tetherv1.DisconnectReason_DISCONNECT_REASON_NODE_LOST,
		Time:    t,
		Message: "server node " + s.Node + " stopped renewing its liveness",
	}
}

// Derive returns r as readers must see it given whether its session's node is
// alive: a session on a dead node reads as offline with a NODE_LOST last
// disconnect. It never modifies r's pointees.
func Derive(r Record, nodeAlive bool) Record {
	if r.Session == nil || nodeAlive {
		return r
	}
	r.LastDisconnect = NodeLost(r.Session)
	r.Session = nil
	return r
}
