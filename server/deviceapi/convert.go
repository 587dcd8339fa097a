package deviceapi

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/session"
)

// deviceProto converts a record, overlaying the fresher liveness figures of
// a local session that holds the record's lease.
func deviceProto(r registry.Record, local *session.Session) *tetherv1.Device {
	d := &tetherv1.Device{DeviceId: r.DeviceID, Online: r.Online(), Info: r.Info, State: stateOf(r)}
	if !r.FirstSeen.IsZero() {
		d.FirstSeen = timestamppb.New(r.FirstSeen)
	}
	if s := r.Session; s != nil {
		ps := &tetherv1.Session{
			LeaseId: s.Lease, Node: s.Node, RemoteAddress: s.RemoteAddr, LivenessMode: s.Mode,
		}
		if !s.ConnectedAt.IsZero() {
			ps.ConnectedAt = timestamppb.New(s.ConnectedAt)
		}
		lastSeen, rtt := s.LastSeen, s.RTT
		if local != nil && local.Lease == s.Lease {
			if ls := local.LastSeen(); ls.After(lastSeen) {
				lastSeen = ls
			}
			if r := local.LastRTT(); r > 0 {
				rtt = r
			}
			if info := local.Info(); info != nil && d.Info == nil {
				d.Info = info
			}
		}
		if !lastSeen.IsZero() {
			ps.LastSeen = timestamppb.New(lastSeen)
		}
		if rtt > 0 {
			ps.LastRtt = durationpb.New(rtt)
		}
		d.Session = ps
	}
	if l := r.LastDisconnect; l != nil {
		d.LastDisconnect = disconnectProto(l)
	}
	return d
}

func disconnectProto(l *registry.Disconnect) *tetherv1.Disconnect {
	pd := &tetherv1.Disconnect{Reason: l.Reason, LeaseId: l.Lease, Message: l.Message, Restart: l.Restart, Node: l.Node}
	if !l.Time.IsZero() {
		pd.Time = timestamppb.New(l.Time)
	}
	return pd
}
