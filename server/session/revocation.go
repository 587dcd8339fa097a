package session

import (
	"context"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// WatchRevocations is the one loop per replica that ends sessions whose
// device token was revoked or has expired, until ctx ends. Every
// RevocationPoll it
//   - ends the sessions whose token expired (Close(AUTH_FAILED): the
//     credentials are no longer accepted; the agent reconnects with a new
//     token), with no store call;
//   - reads the deny list's version (one store call); when the version
//     moved it checks the token of every live session, otherwise only of
//     sessions that started since the last check. Stores that implement
//     registry.BatchRevocations answer all of them in pipelined batches
//     (20,000 sessions are a few round trips); a revoked token's session
//     gets Close(AUTH_REVOKED).
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
		h.endExpired(time.Now())
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

// endExpired ends the sessions whose device token has expired.
func (h *Hub) endExpired(now time.Time) {
	for _, s := range h.Sessions() {
		if !s.TokenExpiry.IsZero() && !now.Before(s.TokenExpiry) {
			h.log.Info("device token expired; ending its session", "device", s.DeviceID, "lease", s.Lease, "token", s.TokenID, "expired", s.TokenExpiry)
			s.End(tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_FAILED, "the device token "+s.TokenID+" expired; reconnect with a new token")
		}
	}
}

// checkRevoked checks the tokens of the live sessions (all, or only those
// not yet checked); it reports false when the store failed.
func (h *Hub) checkRevoked(ctx context.Context, rev registry.Revocations, all bool) bool {
	var todo []*Session
	var ids []string
	seen := map[string]bool{}
	for _, s := range h.Sessions() {
		if s.TokenID == "" || (!all && s.tokenChecked.Load()) {
			continue
		}
		todo = append(todo, s)
		if !seen[s.TokenID] {
			seen[s.TokenID] = true
			ids = append(ids, s.TokenID)
		}
	}
	if len(ids) == 0 {
		return true
	}
	verdict, err := revokedMany(ctx, rev, ids)
	if err != nil {
		h.log.Debug("revocation check failed", "err", err)
		return false
	}
	for _, s := range todo {
		s.tokenChecked.Store(true)
		if verdict[s.TokenID] {
			h.log.Info("device token revoked; ending its session", "device", s.DeviceID, "lease", s.Lease, "token", s.TokenID)
			s.End(tetherv1.DisconnectReason_DISCONNECT_REASON_AUTH_REVOKED, "the device token "+s.TokenID+" was revoked")
		}
	}
	return true
}

// revokedMany asks the deny list about ids: in batches when it can, else
// one call per token.
func revokedMany(ctx context.Context, rev registry.Revocations, ids []string) (map[string]bool, error) {
	if b, ok := rev.(registry.BatchRevocations); ok {
		return b.RevokedMany(ctx, ids)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		r, err := rev.Revoked(ctx, id)
		if err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, nil
}
