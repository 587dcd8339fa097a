package server

import (
	"context"

	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/registry/redisstore"
)

func storeKind(c Config) string {
	if c.RedisURL != "" {
		return "redis"
	}
	return "memory"
}

// openStore builds the registry store: Redis when a URL is configured, the
// embedded in-memory store otherwise.
func openStore(ctx context.Context, c Config) (registry.Store, error) {
	if c.RedisURL == "" {
		return memstore.New(memstore.Options{DeviceRetention: c.DeviceRetention,
			HistoryLen: c.Fleet.HistoryLen, HistoryRetention: c.Fleet.HistoryRetention, NeverConnectedRetention: c.Fleet.NeverConnectedRetention}), nil
	}
	return redisstore.New(ctx, redisstore.Options{URL: c.RedisURL, Logger: c.Logger, DeviceRetention: c.DeviceRetention, Pools: c.Limits.RedisPools,
		HistoryLen: c.Fleet.HistoryLen, HistoryRetention: c.Fleet.HistoryRetention, NeverConnectedRetention: c.Fleet.NeverConnectedRetention})
}
