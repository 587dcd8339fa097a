package memstore_test

import (
	"testing"

	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/storetest"
)

// TestRebootRaceAcrossTwoReplicas runs the same random interleavings of the
// reboot race against the in-memory store (two replicas in one process share
// one store).
func TestRebootRaceAcrossTwoReplicas(t *testing.T) {
	h := harness()
	h.Replica = func(t *testing.T, st registry.Store) registry.Store { return st }
	storetest.RebootRace(t, h, 3000)
}
