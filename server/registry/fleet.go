package registry

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Fleet views: per-device presence history, device lifecycle (delete,
// pre-register), inventory counts and the replicas (nodes). Each is a role
// interface a Store may implement besides Store; both stores implement all
// of them. Callers type-assert (a store without one answers UNIMPLEMENTED).

// Bounds and defaults of the fleet views.
const (
	// DefaultHistoryLen is how many ended sessions a device's history keeps.
	DefaultHistoryLen = 20
	// MaxHistoryLen bounds HistoryLen (and so the history's memory).
	MaxHistoryLen = 100
	// DefaultHistoryRetention is how long a history lives after the last
	// session end it recorded.
	DefaultHistoryRetention = 30 * 24 * time.Hour
	// DefaultNeverConnectedRetention is how long a pre-registered device
	// that never connected is kept.
	DefaultNeverConnectedRetention = 30 * 24 * time.Hour
	// MaxHistoryMessageBytes bounds the message of a history entry.
	MaxHistoryMessageBytes = 128
	// MaxInventoryBuckets bounds each group of an Inventory: the most
	// frequent values are kept, the rest are summed under OtherBucket.
	MaxInventoryBuckets = 100
	// OtherBucket is the bucket of values beyond MaxInventoryBuckets.
	OtherBucket = "(other)"
	// NoneBucket counts devices without the value (no info, no label).
	NoneBucket = "(none)"
	// MaxPreRegisterLabels bounds a pre-registration's labels (the same
	// bounds as an agent's: session.MaxInfoLabels and key/value sizes).
	MaxPreRegisterLabels = 64
)

// Errors of the fleet views.
var (
	// ErrOnline: the device has a live session (Delete without force).
	ErrOnline = errors.New("registry: device is online")
	// ErrExists: a record for the device exists (PreRegister).
	ErrExists = errors.New("registry: device already exists")
)

// SessionEnd is one ended session in a device's history.
type SessionEnd struct {
	Lease       uint64
	Node        string
	ConnectedAt time.Time
	EndedAt     time.Time
	Reason      tetherv1.DisconnectReason
	// Restart is the verdict of the device's next Hello (UNSPECIFIED until
	// it comes back).
	Restart tetherv1.DeviceRestart
	// RTT is the last round-trip time the registry recorded for it.
	RTT     time.Duration
	Message string
}

// History is implemented by stores that keep the last sessions of each
// device. The entry is written by the same atomic step that ends the
// session (Release, ReleaseClaim, reconciliation's orphan, a Claim that
// replaces a session or finds its node lost); the restart verdict is filled
// in by the next Claim.
type History interface {
	// History returns up to limit of the device's latest ended sessions,
	// newest first (none for an unknown device: not an error).
	History(ctx context.Context, deviceID string, limit int) ([]SessionEnd, error)
}

// Lifecycle is implemented by stores that can delete and pre-register
// devices.
type Lifecycle interface {
	// Delete removes the device's record, its history and its index entry.
	// ErrOnline when a session is current on a live node (end it first);
	// ErrNotFound when there is no record. A session on a dead node does not
	// count as online.
	Delete(ctx context.Context, deviceID string) error
	// PreRegister creates the record of a device expected to connect: no
	// session, lease 0, the given labels; it reads as never connected
	// until its first Claim, which keeps these labels under the agent's own
	// (the agent's value wins for a key both set). ErrExists when the device
	// has a record.
	PreRegister(ctx context.Context, deviceID string, labels map[string]string, now time.Time) (Record, error)
}

// Inventory counts the fleet. Every device is counted once in Total and in
// exactly one of Online, Offline, NeverConnected; the maps group all devices
// (Nodes: online ones only) by a value, bounded by MaxInventoryBuckets.
type Inventory struct {
	Total, Online, Offline, NeverConnected int
	ByAgentVersion, ByOS, ByNode, ByLabel  map[string]int
	// LabelKey is the label ByLabel groups by ("" = none).
	LabelKey string
	// At is when the counts were taken.
	At time.Time
}

// NodeInfo is one server replica as the registry sees it.
type NodeInfo struct {
	Name string
	// Addr is the peer address while alive.
	Addr  string
	Alive bool
	// Sessions counts the node's entries in its session index.
	Sessions int
	// LastRenewed is the last liveness renewal the registry recorded.
	LastRenewed time.Time
}

// Fleet is implemented by stores that can count devices and list nodes.
type Fleet interface {
	// Inventory counts every device, grouping also by labelKey when set.
	Inventory(ctx context.Context, labelKey string) (Inventory, error)
	// Nodes lists the replicas that renewed their liveness within the last
	// NodeMemory, by name.
	Nodes(ctx context.Context) ([]NodeInfo, error)
}

// NodeMemory is how long a node that stopped renewing is still listed (as
// not alive) by Nodes.
const NodeMemory = 24 * time.Hour

// NeverConnected reports whether the record was pre-registered and no
// session was ever claimed for it.
func (r Record) NeverConnected() bool { return r.Lease == 0 && r.Session == nil }

// MergeLabels returns info with pre-registered labels under its own (the
// info's value wins); info is not modified. A nil info with labels becomes
// an info holding only the labels.
func MergeLabels(info *tetherv1.DeviceInfo, pre map[string]string) *tetherv1.DeviceInfo {
	if len(pre) == 0 {
		return info
	}
	var out *tetherv1.DeviceInfo
	if info == nil {
		out = &tetherv1.DeviceInfo{}
	} else {
		out = proto.Clone(info).(*tetherv1.DeviceInfo)
	}
	labels := maps.Clone(pre)
	maps.Copy(labels, out.GetLabels())
	out.Labels = labels
	return out
}

// Counter accumulates an Inventory from records (for stores that scan).
type Counter struct {
	inv Inventory
}

// NewCounter starts an Inventory grouping also by labelKey.
func NewCounter(labelKey string, at time.Time) *Counter {
	return &Counter{inv: Inventory{
		ByAgentVersion: map[string]int{}, ByOS: map[string]int{}, ByNode: map[string]int{}, ByLabel: map[string]int{},
		LabelKey: labelKey, At: at,
	}}
}

// Add counts one record (presence already derived).
func (c *Counter) Add(r Record) {
	inv := &c.inv
	inv.Total++
	switch {
	case r.Online():
		inv.Online++
		inv.ByNode[r.Session.Node]++
	case r.NeverConnected():
		inv.NeverConnected++
	default:
		inv.Offline++
	}
	or := func(s string) string {
		if s == "" {
			return NoneBucket
		}
		return s
	}
	inv.ByAgentVersion[or(r.Info.GetAgentVersion())]++
	inv.ByOS[or(r.Info.GetOs())]++
	if inv.LabelKey != "" {
		v, ok := r.Info.GetLabels()[inv.LabelKey]
		if !ok {
			v = NoneBucket
		}
		inv.ByLabel[v]++
	}
}

// Result returns the counts, each group cut to MaxInventoryBuckets.
func (c *Counter) Result() Inventory {
	inv := c.inv
	for _, m := range []map[string]int{inv.ByAgentVersion, inv.ByOS, inv.ByNode, inv.ByLabel} {
		capBuckets(m, MaxInventoryBuckets)
	}
	return inv
}

// capBuckets keeps the n-1 largest buckets of m (ties by name) and sums the
// rest under OtherBucket when m has more than n.
func capBuckets(m map[string]int, n int) {
	if len(m) <= n {
		return
	}
	type kv struct {
		k string
		v int
	}
	all := make([]kv, 0, len(m))
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sortKV := func(a, b kv) int {
		if a.v != b.v {
			return b.v - a.v
		}
		if a.k < b.k {
			return -1
		}
		return 1
	}
	slices.SortFunc(all, sortKV)
	other := 0
	for _, e := range all[n-1:] {
		other += e.v
		delete(m, e.k)
	}
	m[OtherBucket] += other
}
