package deviceapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// watchBatch is how many events one store read returns at most.
const watchBatch = 256

// validEventID accepts the event id shapes the stores issue (digits and
// dashes, e.g. Redis stream ids "1700000000000-3").
func validEventID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// WatchDevices implements DeviceService: the resume point is fixed first, then
// the optional snapshot is sent, then every event after the resume point, so
// that no event between the snapshot and the live stream is lost.
func (s *Service) WatchDevices(req *tetherv1.WatchDevicesRequest, stream tetherv1.DeviceService_WatchDevicesServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stopAfter := context.AfterFunc(s.closing, cancel)
	defer stopAfter()
	s.metrics.WatcherDelta(1)
	defer s.metrics.WatcherDelta(-1)

	after := req.GetAfterEventId()
	if after != "" && !validEventID(after) {
		return status.Errorf(codes.InvalidArgument, "after_event_id: %q is not an event id this API issued", after)
	}
	if after == "" {
		id, err := s.store.LastEventID(ctx)
		if err != nil {
			return storeErr("watch devices", err)
		}
		// "" (no event yet) reads from the oldest retained event, which
		// is the first one to arrive after this point.
		after = id
	}
	send := func(e *tetherv1.DeviceEvent) error {
		return stream.Send(&tetherv1.WatchDevicesResponse{Event: e})
	}
	if req.GetIncludeSnapshot() {
		next := ""
		for {
			page, err := s.store.List(ctx, registry.ListQuery{After: next, Limit: MaxPageSize})
			if err != nil {
				return storeErr("watch devices (snapshot)", err)
			}
			for _, r := range page.Records {
				e := &tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_SNAPSHOT, DeviceId: r.DeviceID, Device: deviceProto(r, s.local(r)), Time: timestamppb.Now()}
				if r.Session != nil {
					e.LeaseId, e.Node = r.Session.Lease, r.Session.Node
				}
				if err := send(e); err != nil {
					return err
				}
			}
			if page.Next == "" {
				break
			}
			next = page.Next
		}
		if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_SNAPSHOT_END, Time: timestamppb.Now()}); err != nil {
			return err
		}
	}
	// A first heartbeat right away, so that HTTP clients behind the gateway
	// get their response headers without waiting for the first event.
	if !req.GetIncludeSnapshot() {
		if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_HEARTBEAT, Time: timestamppb.Now()}); err != nil {
			return err
		}
	}
	for {
		events, err := s.store.ReadEvents(ctx, after, watchBatch, s.cfg.WatchHeartbeat)
		if err != nil {
			if s.closing.Err() != nil {
				return status.Error(codes.Unavailable, "server is shutting down; reconnect and resume with after_event_id")
			}
			if ctx.Err() != nil {
				return status.FromContextError(ctx.Err()).Err()
			}
			return storeErr("watch devices", err)
		}
		if len(events) == 0 {
			if err := send(&tetherv1.DeviceEvent{Type: tetherv1.EventType_EVENT_TYPE_HEARTBEAT, Time: timestamppb.Now()}); err != nil {
				return err
			}
			continue
		}
		for _, ev := range events {
			if err := send(eventProto(ev)); err != nil {
				return err
			}
			after = ev.ID
		}
	}
}

func eventProto(ev registry.Event) *tetherv1.DeviceEvent {
	e := &tetherv1.DeviceEvent{
		EventId: ev.ID, Type: ev.Type, DeviceId: ev.DeviceID, LeaseId: ev.Lease, Reason: ev.Reason, Node: ev.Node,
	}
	if !ev.Time.IsZero() {
		e.Time = timestamppb.New(ev.Time)
	}
	return e
}
