package registry

import (
	"context"
	"time"
)

// Revocations is the deny list of device tokens, kept next to the registry
// so that every replica sees a revocation. A Store may implement it; the
// server checks with a type assertion. Entries expire on their own at
// until (the token's expiry): an expired token is refused anyway.
type Revocations interface {
	// Revoke adds tokenID to the deny list until the given time. The last
	// call's until wins.
	Revoke(ctx context.Context, tokenID string, until time.Time) error
	// Revoked reports whether tokenID is on the deny list now.
	Revoked(ctx context.Context, tokenID string) (bool, error)
	// RevocationVersion changes whenever Revoke is called (and may change
	// when the store lost its data), so a replica can poll one value and
	// re-check its live sessions only when it moved.
	RevocationVersion(ctx context.Context) (uint64, error)
}

// BatchRevocations is implemented by deny lists that check many tokens in
// one round trip (the revocation loop uses it when present).
type BatchRevocations interface {
	// RevokedMany reports which of tokenIDs are on the deny list now.
	RevokedMany(ctx context.Context, tokenIDs []string) (map[string]bool, error)
}
