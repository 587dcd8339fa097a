package session

import (
	"context"
	"errors"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
)

// Mirror keeps the registry in step with the sessions this replica holds,
// until ctx ends. It is the one loop per replica that
//   - renews the node's liveness every RenewInterval (a replica that stops
//     renewing — a crash — has its sessions read as offline after NodeTTL);
//   - notices when the store lost the node's record (a Redis restart without
//     persistence, FLUSHALL) or changed server (a restart or failover seen
//     through registry.Epocher) and re-verifies every live session at once;
//   - retries Release and ReleaseClaim calls whose outcome was unknown;
//   - writes last-seen times and RTTs in one batch every MirrorInterval,
//     sorting each session by its outcome (see registry.ErrMissing):
//     superseded sessions end as REPLACED, missing ones are written back,
//     unknown ones are kept and retried at the next renewal;
//   - reconciles every ReconcileInterval: records that name this replica
//     for a lease it does not hold are ended (ORPHANED), held sessions the
//     registry lacks are written back;
//   - sweeps the device index of expired devices (stores that need it).
//
// advertise is the address peers use to reach this replica.
func (h *Hub) Mirror(ctx context.Context, advertise string) {
	renew := time.NewTicker(h.cfg.RenewInterval())
	defer renew.Stop()
	touch := time.NewTicker(h.cfg.MirrorInterval)
	defer touch.Stop()
	reconcile := time.NewTicker(h.cfg.ReconcileInterval)
	defer reconcile.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	var sweepCursor string
	healthy := h.StoreHealthy()
	if !healthy {
		healthy = h.renew(ctx, advertise, true)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-renew.C:
			healthy = h.renew(ctx, advertise, !healthy)
			if healthy && h.retryTouch.Swap(false) {
				h.touchAll(ctx)
			}
			if healthy && h.reconcileNow.Load() {
				h.reconcile(ctx)
			}
		case <-touch.C:
			h.touchAll(ctx)
		case <-reconcile.C:
			h.reconcile(ctx)
		case <-sweep.C:
			sweepCursor = h.sweepIndex(ctx, sweepCursor)
		}
	}
}

// Register renews the node's liveness once, synchronously, so that a
// replica is registered (and ready) before it serves; Mirror keeps it so.
func (h *Hub) Register(ctx context.Context, advertise string) bool {
	return h.renew(ctx, advertise, true)
}

// renew reports whether the registry renewal succeeded.
func (h *Hub) renew(ctx context.Context, advertise string, wasDown bool) bool {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	fail := func(what string, err error) bool {
		h.metrics.StoreError("renew")
		h.setStoreHealthy(false)
		if !wasDown {
			h.log.Warn("registry "+what+" failed; sessions stay up, retrying", "node", h.cfg.Node, "every", h.cfg.RenewInterval(), "err", err)
		}
		return false
	}
	_, lookErr := h.store.NodeAddr(ctx, h.cfg.Node)
	lost := errors.Is(lookErr, registry.ErrNotFound)
	if lookErr != nil && !lost {
		return fail("node lookup", lookErr)
	}
	if err := h.store.KeepNodeAlive(ctx, h.cfg.Node, advertise, h.cfg.NodeTTL); err != nil {
		return fail("node renewal", err)
	}
	changed := h.epochChanged(ctx)
	if lost || wasDown || changed {
		if lost || changed {
			h.log.Info("registry may have lost writes; re-verifying every live session", "node", h.cfg.Node, "node_key_lost", lost, "server_changed", changed)
		}
		if err := h.remirror(ctx, h.Sessions()); err != nil {
			h.metrics.StoreError("remirror")
			return fail("re-mirror", err)
		}
		if changed {
			h.retryTouch.Store(true)
			h.reconcileSoon()
		}
	}
	h.retryReleases()
	if wasDown {
		h.log.Info("registry reachable again", "node", h.cfg.Node)
	}
	h.setStoreHealthy(true)
	return true
}

// epochChanged reports whether the store's server changed since the last
// look (never on the first look, nor for stores that cannot tell).
func (h *Hub) epochChanged(ctx context.Context) bool {
	ep, ok := h.store.(registry.Epocher)
	if !ok {
		return false
	}
	e, err := ep.Epoch(ctx)
	if err != nil || e == "" {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := h.epoch != "" && h.epoch != e
	h.epoch = e
	return changed
}

// reconcileSoon makes the next renewal tick run a reconciliation pass.
func (h *Hub) reconcileSoon() { h.reconcileNow.Store(true) }

// live describes held sessions for Remirror.
func (h *Hub) live(held []*Session) []registry.Live {
	out := make([]registry.Live, 0, len(held))
	for _, s := range held {
		out = append(out, registry.Live{
			DeviceID: s.DeviceID, Lease: s.Lease, Node: h.cfg.Node, RemoteAddr: s.RemoteAddr, Mode: s.Mode,
			Info: s.Info(), ConnectedAt: s.ConnectedAt, LastSeen: s.LastSeen(), RTT: s.LastRTT(),
		})
	}
	return out
}

// remirror writes held sessions back; a session the store reports
// superseded is ended as replaced, one whose outcome is unknown is kept
// (the next renewal or reconciliation tries again).
func (h *Hub) remirror(ctx context.Context, held []*Session) error {
	if len(held) == 0 {
		return nil
	}
	res, err := h.store.Remirror(ctx, h.live(held))
	if err != nil {
		h.metrics.Outcome("remirror", "unknown")
		return err
	}
	h.metrics.Remirrored()
	h.log.Info("re-mirrored live sessions into the registry", "node", h.cfg.Node, "sessions", len(held), "superseded", len(res.Stale), "unknown", len(res.Unknown))
	for _, l := range res.Stale {
		h.metrics.StaleWrite("remirror")
		h.metrics.Outcome("remirror", "stale")
		h.endSuperseded(l.DeviceID, l.Lease)
	}
	if len(res.Unknown) > 0 {
		h.metrics.Outcome("remirror", "unknown")
		h.retryTouch.Store(true) // a touch sorts them again
	}
	return nil
}

func (h *Hub) endSuperseded(deviceID string, lease uint64) {
	if s := h.Lookup(deviceID); s != nil && s.Lease == lease {
		s.End(replaced, "a newer session of this device exists elsewhere")
	}
}

// sessionsOf returns the held sessions among ids with the given leases.
func (h *Hub) sessionsOf(want map[string]uint64) []*Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*Session
	for id, lease := range want {
		if s := h.sessions[id]; s != nil && s.Lease == lease {
			out = append(out, s)
		}
	}
	return out
}

func (h *Hub) retryReleases() {
	h.mu.Lock()
	rel := h.releases
	h.releases = nil
	h.mu.Unlock()
	for _, r := range rel {
		if r.claimID != "" {
			h.releaseClaim(r.deviceID, r.claimID, r.end)
		} else {
			h.release(r.deviceID, r.end)
		}
	}
}

func (h *Hub) touchAll(ctx context.Context) {
	held := h.Sessions()
	if len(held) == 0 {
		return
	}
	touches := make([]registry.Touch, 0, len(held))
	for _, s := range held {
		touches = append(touches, registry.Touch{DeviceID: s.DeviceID, Lease: s.Lease, LastSeen: s.LastSeen(), RTT: s.LastRTT()})
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	res, err := h.store.Touch(ctx, touches)
	if err != nil {
		h.metrics.StoreError("touch")
		h.metrics.Outcome("touch", "unknown")
		h.retryTouch.Store(true)
		h.log.Warn("last-seen mirror failed; sessions are kept, retrying at the next renewal", "node", h.cfg.Node, "err", err)
		return
	}
	for _, t := range res.Stale {
		h.metrics.StaleWrite("touch")
		h.metrics.Outcome("touch", "stale")
		h.log.Debug("stale touch refused", "device", t.DeviceID, "lease", t.Lease)
		h.endSuperseded(t.DeviceID, t.Lease)
	}
	if len(res.Unknown) > 0 {
		h.metrics.StoreError("touch")
		h.metrics.Outcome("touch", "unknown")
		h.retryTouch.Store(true)
	}
	if len(res.Missing) > 0 {
		want := make(map[string]uint64, len(res.Missing))
		for _, t := range res.Missing {
			want[t.DeviceID] = t.Lease
		}
		h.writeBack(ctx, "touch", want)
	}
}

// writeBack re-mirrors the held sessions in want (device → lease) that op
// found missing from the registry; a failed write-back is retried at the
// next renewal.
func (h *Hub) writeBack(ctx context.Context, op string, want map[string]uint64) {
	h.metrics.Outcome(op, "missing")
	h.log.Warn("registry lost records of live sessions; writing them back", "node", h.cfg.Node, "found_by", op, "sessions", len(want))
	if err := h.remirror(ctx, h.sessionsOf(want)); err != nil {
		h.metrics.StoreError("remirror")
		h.retryTouch.Store(true)
	}
}

// reconcile runs one reconciliation pass (see registry.Store.Reconcile).
func (h *Hub) reconcile(ctx context.Context) {
	h.reconcileNow.Store(false)
	held := h.Sessions()
	hs := make([]registry.Held, len(held))
	for i, s := range held {
		hs[i] = registry.Held{DeviceID: s.DeviceID, Lease: s.Lease}
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	res, err := h.store.Reconcile(ctx, h.cfg.Node, hs, h.orphan)
	h.metrics.Reconciled(err == nil)
	for i, d := range res.Orphaned {
		h.log.Warn("registry record named this replica for a session it does not hold; ended", "device", res.OrphanedIDs[i],
			"lease", d.Lease, "node", h.cfg.Node, "reason", metrics.ReasonLabel(tetherv1.DisconnectReason_DISCONNECT_REASON_ORPHANED))
	}
	h.metrics.Orphaned(len(res.Orphaned))
	if err != nil {
		h.log.Debug("reconciliation incomplete; the next pass retries", "node", h.cfg.Node, "err", err)
		return
	}
	for _, s := range res.Stale {
		h.metrics.Outcome("reconcile", "stale")
		h.endSuperseded(s.DeviceID, s.Lease)
	}
	if len(res.Missing) > 0 {
		want := make(map[string]uint64, len(res.Missing))
		for _, m := range res.Missing {
			want[m.DeviceID] = m.Lease
		}
		h.writeBack(ctx, "reconcile", want)
	}
}

// orphan confirms, right before reconciliation ends a record, that this
// replica neither holds lease for the device nor is claiming it.
func (h *Hub) orphan(deviceID string, lease uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.sessions[deviceID]; s != nil && s.Lease == lease {
		return false
	}
	return h.claiming[deviceID] == 0
}

// sweepInterval is how often one page of the device index is checked for
// expired devices (stores that need it); sweepPage is its size.
const (
	sweepInterval = 10 * time.Second
	sweepPage     = 200
)

func (h *Hub) sweepIndex(ctx context.Context, cursor string) string {
	sw, ok := h.store.(registry.IndexSweeper)
	if !ok {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
	defer cancel()
	next, removed, err := sw.SweepIndex(ctx, cursor, sweepPage)
	if err != nil {
		return cursor
	}
	if removed > 0 {
		h.log.Debug("device index: removed expired devices", "removed", removed)
	}
	return next
}
