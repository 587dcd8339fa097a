package redisstore_test

import (
	"testing"

	"github.com/tetherhq/tether/internal/testredis"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// TestRebootRaceAcrossTwoReplicas runs thousands of random interleavings of
// the reboot race against a real redis-server shared by two replicas' stores
// (two clients, as two tether-server processes would have).
func TestRebootRaceAcrossTwoReplicas(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 200
	}
	srv := testredis.Start(t)
	storetest.RebootRace(t, storetest.Harness{
		New: func(t *testing.T, opts storetest.Options) registry.Store {
			return open(t, srv.URL(), "race", opts)
		},
		Replica: func(t *testing.T, st registry.Store) registry.Store {
			return open(t, srv.URL(), "race", storetest.Options{})
		},
	}, n)
}
