package session

import (
	"context"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// WatchRevocations is the one loop per replica that ends sessions whose
// device token was revoked, until ctx ends. Every RevocationPoll it reads
// the deny list's version (one store call); when the version moved, it
// checks the token of every live session, otherwise only of sessions that
// started since the last check. A revoked token's session gets
// Close(AUTH_REVOKED).
func (h *Hub) WatchRevocations(ctx context.Context, rev registry.Revocations) {
	t := time.NewTicker(h.cfg.RevocationPoll)
	defer t.Stop()
	var last uint64
	first := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout)
		v, err := rev.RevocationVersion(cctx)
		if err != nil {
			cancel()
			h.log.Debug("revocation version unavailable", "err", err)
			continue
		}
		all := first || v != last
		if h.checkRevoked(cctx, rev, all) {
			first, last = false, v
		}
		cancel()
	}
}

// checkRevoked checks the tokens of the live sessions (all, or only those
// not yet checked); it reports false when the store failed.
func (h *Hub) checkRevoked(ctx context.Context, rev registry.Revocations, all bool) bool {
	verdict := map[string]bool{}
	for _, s := range h.Sessions() {
		if s.TokenID == "" || (!all && s.tokenChecked.Load()) {
			continue
		}
		revoked, seen := verdict[s.TokenID]
		if !seen {
			var err error
			revoked, err = rev.Revoked(ctx, s.TokenID)
			if err != nil {
				h.log.Debug("revocation check failed", "err", err)
				return false
			}
			verdict[s.TokenID] = revoked
		}
		s.tokenChecked.Store(true)
		if revoked {
			h.log.Info("device token revoked; ending its session", "device", s.DeviceID, "lease", s.Lease, "token", s.TokenID)
			s.End(tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED, "the device token "+s.TokenID+" was revoked")
		}
	}
	return true
}
