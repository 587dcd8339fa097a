package deviceapi

import (
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// deviceProto converts a record (the router merges live session state in
// first: Router.Merge).
func deviceProto(r registry.Record) *tetherv1.Device {
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
		if !s.LastSeen.IsZero() {
			ps.LastSeen = timestamppb.New(s.LastSeen)
		}
		if s.RTT > 0 {
			ps.LastRtt = durationpb.New(s.RTT)
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
