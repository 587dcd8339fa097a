package redisstore_test

import (
	"fmt"
	"testing"

	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// TestFleetContract runs the fleet views' contract against a real
// redis-server, one key prefix per store.
func TestFleetContract(t *testing.T) {
	srv := testredis.Start(t)
	storetest.RunFleet(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			return open(t, srv.URL(), fmt.Sprintf("f%d", prefixes.Add(1)), opts)
		},
	})
}
