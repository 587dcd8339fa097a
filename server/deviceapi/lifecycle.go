package deviceapi

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/session"
)

// forceAttempts bounds how often DeleteDevice with force ends a session and
// retries when the device reconnected in between.
const forceAttempts = 3

// stateOf is the record's presence as one value.
func stateOf(r registry.Record) tetherv1.DeviceState {
	switch {
	case r.Online():
		return tetherv1.DeviceState_DEVICE_STATE_ONLINE
	case r.NeverConnected():
		return tetherv1.DeviceState_DEVICE_STATE_NEVER_CONNECTED
	}
	return tetherv1.DeviceState_DEVICE_STATE_OFFLINE
}

func (s *Service) lifecycle() (registry.Lifecycle, error) {
	l, ok := s.store.(registry.Lifecycle)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "this registry cannot delete or pre-register devices")
	}
	return l, nil
}

// DeleteDevice implements DeviceService. Without force an online device is
// refused (FAILED_PRECONDITION). With force the session is ended through
// DisconnectDevice (on whichever replica holds it, which returns once the
// registry recorded the end) and the record is then deleted; a device that
// reconnects in between is disconnected again, up to forceAttempts times.
func (s *Service) DeleteDevice(ctx context.Context, req *tetherv1.DeleteDeviceRequest) (*tetherv1.DeleteDeviceResponse, error) {
	id := req.GetDeviceId()
	if err := validID(id); err != nil {
		return nil, err
	}
	l, err := s.lifecycle()
	if err != nil {
		return nil, err
	}
	resp := &tetherv1.DeleteDeviceResponse{}
	for attempt := 1; ; attempt++ {
		err := l.Delete(ctx, id)
		switch {
		case err == nil:
			s.cfg.Logger.Info("device deleted", "device", id, "force", req.GetForce(), "ended_lease", resp.EndedLeaseId)
			s.fleetCache().forget()
			return resp, nil
		case !errors.Is(err, registry.ErrOnline):
			return nil, storeErr("device "+id, err)
		case !req.GetForce():
			return nil, status.Errorf(codes.FailedPrecondition, "device %s is online: disconnect it first, or delete with force", id)
		case attempt > forceAttempts:
			return nil, status.Errorf(codes.FailedPrecondition, "device %s reconnected %d times while being deleted; stop its agent first", id, forceAttempts)
		}
		d, err := s.DisconnectDevice(ctx, &tetherv1.DisconnectDeviceRequest{DeviceId: id, Message: "the device is being deleted"})
		switch status.Code(err) {
		case codes.OK:
			resp.EndedLeaseId = d.GetLeaseId()
		case codes.FailedPrecondition, codes.Aborted, codes.Unavailable, codes.NotFound:
			// Went offline, or was replaced, meanwhile: try the delete again.
		default:
			return nil, err
		}
	}
}

// PreRegisterDevice implements DeviceService.
func (s *Service) PreRegisterDevice(ctx context.Context, req *tetherv1.PreRegisterDeviceRequest) (*tetherv1.PreRegisterDeviceResponse, error) {
	id := req.GetDeviceId()
	if err := validID(id); err != nil {
		return nil, err
	}
	if err := session.ValidateInfo(&tetherv1.DeviceInfo{Labels: req.GetLabels()}); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	l, err := s.lifecycle()
	if err != nil {
		return nil, err
	}
	r, err := l.PreRegister(ctx, id, req.GetLabels(), time.Now())
	switch {
	case errors.Is(err, registry.ErrExists):
		return nil, status.Errorf(codes.AlreadyExists, "device %s is already known", id)
	case err != nil:
		return nil, storeErr("pre-register "+id, err)
	}
	s.cfg.Logger.Info("device pre-registered", "device", id, "labels", len(req.GetLabels()))
	s.fleetCache().forget()
	return &tetherv1.PreRegisterDeviceResponse{Device: deviceProto(r)}, nil
}
