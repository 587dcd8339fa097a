package redisstore

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tetherhq/tether/server/registry"
)

var _ registry.Revocations = (*Store)(nil)

func (s *Store) revokedKey(tokenID string) string { return s.prefix + ":revoked:" + tokenID }
func (s *Store) revocationsKey() string           { return s.prefix + ":revocations" }

// Revoke implements registry.Revocations: SET <prefix>:revoked:<token-id>
// with a TTL until the token's expiry, then INCR <prefix>:revocations, the version replicas poll.
func (s *Store) Revoke(ctx context.Context, tokenID string, until time.Time) error {
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil // the token has expired; nothing to deny
	}
	key := s.revokedKey(tokenID)
	pipe := s.rdb.TxPipeline()
	pipe.Set(ctx, key, until.UTC().Format(time.RFC3339), 0)
	pipe.PExpireAt(ctx, key, until)
	if _, err := pipe.Exec(ctx); err != nil {
		return unavailable("revoke", err)
	}
	// A separate command: the counter lives in another Cluster slot.
	if err := s.rdb.Incr(ctx, s.revocationsKey()).Err(); err != nil {
		return unavailable("revoke", err)
	}
	return nil
}

// Revoked implements registry.Revocations: EXISTS <prefix>:revoked:<token-id>.
func (s *Store) Revoked(ctx context.Context, tokenID string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.revokedKey(tokenID)).Result()
	if err != nil {
		return false, unavailable("revoked", err)
	}
	return n > 0, nil
}

// RevocationVersion implements registry.Revocations: GET <prefix>:revocations
// (0 when absent).
func (s *Store) RevocationVersion(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, s.revocationsKey()).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, unavailable("revocation version", err)
	}
	return v, nil
}

// revokedBatch is how many EXISTS one RevokedMany pipeline carries.
const revokedBatch = 1000

// RevokedMany implements registry.BatchRevocations: EXISTS of each token's
// key, pipelined in batches of revokedBatch.
func (s *Store) RevokedMany(ctx context.Context, tokenIDs []string) (map[string]bool, error) {
	out := make(map[string]bool, len(tokenIDs))
	for start := 0; start < len(tokenIDs); start += revokedBatch {
		batch := tokenIDs[start:min(start+revokedBatch, len(tokenIDs))]
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(batch))
		for i, id := range batch {
			cmds[i] = pipe.Exists(ctx, s.revokedKey(id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, unavailable("revoked", err)
		}
		for i, id := range batch {
			out[id] = cmds[i].Val() > 0
		}
	}
	return out, nil
}
