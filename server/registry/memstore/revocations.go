package memstore

import (
	"context"
	"sync"
	"time"

	"github.com/tetherhq/tether/server/registry"
)

var _ registry.Revocations = (*Store)(nil)

// revocations is the in-memory deny list of device tokens.
type revocations struct {
	mu      sync.Mutex // guards the following
	until   map[string]time.Time
	version uint64
}

// Revoke implements registry.Revocations.
func (s *Store) Revoke(_ context.Context, tokenID string, until time.Time) error {
	r := &s.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.until == nil {
		r.until = map[string]time.Time{}
	}
	now := time.Now()
	for id, u := range r.until { // drop expired entries; the list stays small
		if !u.After(now) {
			delete(r.until, id)
		}
	}
	r.until[tokenID] = until
	r.version++
	return nil
}

// Revoked implements registry.Revocations.
func (s *Store) Revoked(_ context.Context, tokenID string) (bool, error) {
	r := &s.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.until[tokenID]
	return ok && u.After(time.Now()), nil
}

// RevocationVersion implements registry.Revocations.
func (s *Store) RevocationVersion(context.Context) (uint64, error) {
	r := &s.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version, nil
}

// RevokedMany implements registry.BatchRevocations.
func (s *Store) RevokedMany(_ context.Context, tokenIDs []string) (map[string]bool, error) {
	r := &s.revoked
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	out := make(map[string]bool, len(tokenIDs))
	for _, id := range tokenIDs {
		u, ok := r.until[id]
		out[id] = ok && u.After(now)
	}
	return out, nil
}
