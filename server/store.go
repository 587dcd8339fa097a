package server

import (
	"context"

	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
)

func storeKind(c Config) string {
	if c.RedisURL != "" {
		return "redis"
	}
	return "memory"
}

func openStore(ctx context.Context, c Config) (registry.Store, error) {
	_ = ctx
	return memstore.New(memstore.Options{}), nil
}
