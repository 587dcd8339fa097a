package server

import "time"

// FleetRetention sizes the fleet views kept in the registry (zero values
// mean the registry defaults; see docs/ADMIN.md).
type FleetRetention struct {
	// HistoryLen is how many ended sessions each device's history keeps.
	HistoryLen int
	// HistoryRetention is how long a history lives after its newest entry.
	HistoryRetention time.Duration
	// NeverConnectedRetention is how long a pre-registered device that
	// never connected is kept (offline devices: Config.DeviceRetention).
	NeverConnectedRetention time.Duration
}
