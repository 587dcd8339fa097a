package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// The fleet views (registry.History, registry.Lifecycle, registry.Fleet),
// with the same rules as the Redis store's scripts.

var (
	_ registry.History   = (*Store)(nil)
	_ registry.Lifecycle = (*Store)(nil)
	_ registry.Fleet     = (*Store)(nil)
)

type fleetState struct {
	historyLen       int
	historyRetention time.Duration
	neverConnected   time.Duration
	history          map[string]*history
	renewed          map[string]time.Time // node -> last KeepNodeAlive
}

type history struct {
	ends    []registry.SessionEnd // newest first
	expires time.Time
}

func newFleetState(opts Options) fleetState {
	f := fleetState{
		historyLen:       opts.HistoryLen,
		historyRetention: opts.HistoryRetention,
		neverConnected:   opts.NeverConnectedRetention,
		history:          map[string]*history{},
		renewed:          map[string]time.Time{},
	}
	switch {
	case f.historyLen == 0:
		f.historyLen = registry.DefaultHistoryLen
	case f.historyLen < 0:
		f.historyLen = 0
	case f.historyLen > registry.MaxHistoryLen:
		f.historyLen = registry.MaxHistoryLen
	}
	if f.historyRetention <= 0 {
		f.historyRetention = registry.DefaultHistoryRetention
	}
	if f.neverConnected <= 0 {
		f.neverConnected = registry.DefaultNeverConnectedRetention
	}
	return f
}

// pushHistoryLocked records that session ended with end.
func (s *Store) pushHistoryLocked(id string, session *registry.Session, end registry.Disconnect, now time.Time) {
	if s.fleet.historyLen == 0 {
		return
	}
	h := s.fleet.history[id]
	if h == nil || !now.Before(h.expires) {
		h = &history{}
		s.fleet.history[id] = h
	}
	msg := end.Message
	if len(msg) > registry.MaxHistoryMessageBytes {
		msg = msg[:registry.MaxHistoryMessageBytes]
	}
	e := registry.SessionEnd{Lease: end.Lease, Node: end.Node, EndedAt: end.Time, Reason: end.Reason, Restart: end.Restart, Message: msg}
	if session != nil {
		e.ConnectedAt, e.RTT = session.ConnectedAt, session.RTT
	}
	h.ends = slices.Insert(h.ends, 0, e)
	if len(h.ends) > s.fleet.historyLen {
		h.ends = h.ends[:s.fleet.historyLen]
	}
	h.expires = now.Add(s.fleet.historyRetention)
}

// historyVerdictLocked gives the newest history entry, when it is lease's,
// the restart verdict of the device's next Hello.
func (s *Store) historyVerdictLocked(id string, lease uint64, verdict tetherv1.DeviceRestart, now time.Time) {
	if h := s.fleet.history[id]; h != nil && now.Before(h.expires) && len(h.ends) > 0 && h.ends[0].Lease == lease {
		h.ends[0].Restart = verdict
	}
}

// sweepHistoryLocked drops histories past their retention (with the device
// sweep), so deleted and long-gone devices do not hold memory.
func (s *Store) sweepHistoryLocked(now time.Time) {
	for id, h := range s.fleet.history {
		if !now.Before(h.expires) {
			delete(s.fleet.history, id)
		}
	}
}

// History implements registry.History.
func (s *Store) History(ctx context.Context, deviceID string, limit int) ([]registry.SessionEnd, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	if limit <= 0 || limit > registry.MaxHistoryLen {
		limit = registry.MaxHistoryLen
	}
	h := s.fleet.history[deviceID]
	if h == nil || !time.Now().Before(h.expires) {
		delete(s.fleet.history, deviceID)
		return nil, nil
	}
	return slices.Clone(h.ends[:min(limit, len(h.ends))]), nil
}

// Delete implements registry.Lifecycle.
func (s *Store) Delete(ctx context.Context, deviceID string) error {
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
	if d == nil {
		return fmt.Errorf("delete %s: %w", deviceID, registry.ErrNotFound)
	}
	if se := d.rec.Session; se != nil && s.nodeAliveLocked(se.Node, now) {
		return fmt.Errorf("delete %s: a session is current on node %s: %w", deviceID, se.Node, registry.ErrOnline)
	}
	delete(s.devices, deviceID)
	delete(s.fleet.history, deviceID)
	s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_DELETED, DeviceID: deviceID, Time: now})
	if i, found := slices.BinarySearch(s.ids, deviceID); found {
		s.ids = slices.Delete(s.ids, i, i+1)
	}
	return nil
}

// PreRegister implements registry.Lifecycle.
func (s *Store) PreRegister(ctx context.Context, deviceID string, labels map[string]string, now time.Time) (registry.Record, error) {
	if err := ctx.Err(); err != nil {
		return registry.Record{}, unknown(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return registry.Record{}, errClosed
	}
	clock := time.Now()
	if s.deviceLocked(deviceID, clock) != nil {
		return registry.Record{}, fmt.Errorf("pre-register %s: %w", deviceID, registry.ErrExists)
	}
	d := s.newDeviceLocked(deviceID, time.Time{})
	d.preLabels = maps.Clone(labels)
	if d.preLabels == nil {
		d.preLabels = map[string]string{}
	}
	d.expires = clock.Add(s.fleet.neverConnected)
	s.appendLocked(registry.Event{Type: tetherv1.EventType_EVENT_TYPE_REGISTERED, DeviceID: deviceID, Time: now})
	return s.readLocked(d, clock), nil
}

// Inventory implements registry.Fleet.
func (s *Store) Inventory(ctx context.Context, labelKey string) (registry.Inventory, error) {
	if err := ctx.Err(); err != nil {
		return registry.Inventory{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return registry.Inventory{}, errClosed
	}
	now := time.Now()
	c := registry.NewCounter(labelKey, now)
	for _, id := range s.ids {
		if d := s.deviceLocked(id, now); d != nil {
			c.Add(s.readLocked(d, now))
		}
	}
	return c.Result(), nil
}

// Nodes implements registry.Fleet.
func (s *Store) Nodes(ctx context.Context) ([]registry.NodeInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	now := time.Now()
	sessions := map[string]int{}
	for _, id := range s.ids {
		if d := s.deviceLocked(id, now); d != nil && d.rec.Session != nil {
			sessions[d.rec.Session.Node]++
		}
	}
	var out []registry.NodeInfo
	for name, at := range s.fleet.renewed {
		if now.Sub(at) > registry.NodeMemory {
			delete(s.fleet.renewed, name)
			continue
		}
		n := registry.NodeInfo{Name: name, Sessions: sessions[name], LastRenewed: at}
		if s.nodeAliveLocked(name, now) {
			n.Alive, n.Addr = true, s.nodes[name].addr
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b registry.NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
