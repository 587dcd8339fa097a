package router

import (
	"github.com/tetherhq/tether/server/registry"
)

// Merge overlays what this replica's session of the device knows that the
// registry may not have yet — the freshest last-seen time and RTT, and the
// device info when the record has none — on a record, when that session
// holds the record's lease. The record given is not modified.
func (r *Router) Merge(rec registry.Record) registry.Record {
	if r.cfg.Hub == nil || rec.Session == nil {
		return rec
	}
	local := r.cfg.Hub.Lookup(rec.DeviceID)
	if local == nil || local.Lease != rec.Session.Lease {
		return rec
	}
	s := *rec.Session
	if ls := local.LastSeen(); ls.After(s.LastSeen) {
		s.LastSeen = ls
	}
	if rtt := local.LastRTT(); rtt > 0 {
		s.RTT = rtt
	}
	rec.Session = &s
	if rec.Info == nil {
		rec.Info = local.Info()
	}
	return rec
}
