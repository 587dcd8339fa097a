package deviceapi

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// GetDeviceHistory implements DeviceService: the device's last ended
// sessions, newest first, as the registry keeps them (bounded by the
// server's --history-length).
func (s *Service) GetDeviceHistory(ctx context.Context, req *tetherv1.GetDeviceHistoryRequest) (*tetherv1.GetDeviceHistoryResponse, error) {
	if err := validID(req.GetDeviceId()); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", size)
	case size == 0 || size > registry.MaxHistoryLen:
		size = registry.MaxHistoryLen
	}
	h, ok := s.store.(registry.History)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this registry keeps no session history")
	}
	ends, err := h.History(ctx, req.GetDeviceId(), size)
	if err != nil {
		return nil, storeErr("history of "+req.GetDeviceId(), err)
	}
	resp := &tetherv1.GetDeviceHistoryResponse{Sessions: make([]*tetherv1.SessionRecord, 0, len(ends))}
	for _, e := range ends {
		resp.Sessions = append(resp.Sessions, sessionRecordProto(e))
	}
	return resp, nil
}

func sessionRecordProto(e registry.SessionEnd) *tetherv1.SessionRecord {
	r := &tetherv1.SessionRecord{LeaseId: e.Lease, Node: e.Node, Reason: e.Reason, Restart: e.Restart, Message: e.Message}
	if !e.ConnectedAt.IsZero() {
		r.ConnectedAt = timestamppb.New(e.ConnectedAt)
	}
	if !e.EndedAt.IsZero() {
		r.EndedAt = timestamppb.New(e.EndedAt)
	}
	if e.RTT > 0 {
		r.LastRtt = durationpb.New(e.RTT)
	}
	return r
}
