package session

import (
	"context"
	"errors"
	"time"

	"github.com/tetherhq/tether/server/registry"
)

// Mirror keeps the registry in step with the sessions this replica holds,
// until ctx ends. It is the one loop per replica that
//   - renews the node's liveness every RenewInterval (a replica that stops
//     renewing — a crash — has its sessions read as offline after NodeTTL);
//   - notices when the store lost the node's record (a Redis restart without
//     persistence, FLUSHALL) and re-mirrors every live session with its own
//     lease;
//   - retries Release calls that failed while the store was unreachable;
//   - writes last-seen times and RTTs in one batch every MirrorInterval,
//     ending any session whose lease the store reports superseded (a device
//     that took over on another replica).
//
// advertise is the address peers use to reach this replica.
func (h *Hub) Mirror(ctx context.Context, advertise string) {
	renew := time.NewTicker(h.cfg.RenewInterval())
	defer renew.Stop()
	touch := time.NewTicker(h.cfg.MirrorInterval)
	defer touch.Stop()
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
		case <-touch.C:
			h.touchAll(ctx)
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
	_, lookErr := h.store.NodeAddr(ctx, h.cfg.Node)
	lost := errors.Is(lookErr, registry.ErrNotFound)
	if lookErr != nil && !lost {
		h.metrics.StoreError("renew")
		h.setStoreHealthy(false)
		if !wasDown {
			h.log.Warn("registry unreachable; sessions stay up, retrying", "node", h.cfg.Node, "err", lookErr)
		}
		return false
	}
	if err := h.store.KeepNodeAlive(ctx, h.cfg.Node, advertise, h.cfg.NodeTTL); err != nil {
		h.metrics.StoreError("renew")
		h.setStoreHealthy(false)
		return false
	}
	if lost || wasDown {
		if err := h.remirror(ctx); err != nil {
			h.metrics.StoreError("remirror")
			h.setStoreHealthy(false)
			return false
		}
	}
	h.retryReleases()
	h.setStoreHealthy(true)
	return true
}

// remirror re-asserts every held session; a session the store reports
// superseded is ended as replaced.
func (h *Hub) remirror(ctx context.Context) error {
	held := h.Sessions()
	if len(held) == 0 {
		return nil
	}
	live := make([]registry.Live, 0, len(held))
	for _, s := range held {
		live = append(live, registry.Live{
			DeviceID: s.DeviceID, Lease: s.Lease, Node: h.cfg.Node, RemoteAddr: s.RemoteAddr, Mode: s.Mode,
			Info: s.Info(), ConnectedAt: s.ConnectedAt, LastSeen: s.LastSeen(), RTT: s.LastRTT(),
		})
	}
	stale, err := h.store.Remirror(ctx, live)
	if err != nil {
		return err
	}
	h.metrics.Remirrored()
	h.log.Info("re-mirrored live sessions into the registry", "node", h.cfg.Node, "sessions", len(live), "superseded", len(stale))
	for _, l := range stale {
		h.metrics.StaleWrite("remirror")
		h.endSuperseded(l.DeviceID, l.Lease)
	}
	return nil
}

func (h *Hub) endSuperseded(deviceID string, lease uint64) {
	if s := h.Lookup(deviceID); s != nil && s.Lease == lease {
		s.End(replaced, "a newer session of this device exists elsewhere")
	}
}

func (h *Hub) retryReleases() {
	h.mu.Lock()
	rel := h.releases
	h.releases = nil
	h.mu.Unlock()
	for _, r := range rel {
		h.release(r.deviceID, r.end)
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
	stale, err := h.store.Touch(ctx, touches)
	if err != nil {
		h.metrics.StoreError("touch")
		h.log.Warn("last-seen mirror failed", "node", h.cfg.Node, "err", err)
		return
	}
	for _, t := range stale {
		h.metrics.StaleWrite("touch")
		h.log.Debug("stale touch refused", "device", t.DeviceID, "lease", t.Lease)
		h.endSuperseded(t.DeviceID, t.Lease)
	}
}
