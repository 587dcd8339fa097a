package router

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of the errors the router marks.
const ErrorDomain = "tether.dev"

// Reasons an error carries in its ErrorInfo.
const (
	// ReasonOwnerAnswer: the replica holding the session answered (the
	// command failed, timed out, or the session ended under it).
	ReasonOwnerAnswer = "OWNER_ANSWER"
	// ReasonNotHeld: the replica asked does not hold the lease the caller
	// saw (the device went offline, or a newer session took over); the
	// operation was not delivered.
	ReasonNotHeld = "NOT_HELD"
	// ReasonOwnerUnreachable: the replica holding the session could not be
	// reached (or has no peer routing); the outcome of the hop is unknown
	// only for a call that reached the wire.
	ReasonOwnerUnreachable = "OWNER_UNREACHABLE"
)

// MetadataNotSent is the ErrorInfo metadata key set to "true" on
// OWNER_UNREACHABLE errors raised before anything was sent to the owner (no
// peer routing, the owner's node unknown or not dialable).
const MetadataNotSent = "not_sent"

// mark returns err's status with an ErrorInfo of reason added (the code and
// message are kept). An error that already carries a tether.dev ErrorInfo
// is returned unchanged.
func mark(err error, reason, deviceID, node string) error {
	return markMD(err, reason, deviceID, node, nil)
}

func markMD(err error, reason, deviceID, node string, extra map[string]string) error {
	if err == nil || Reason(err) != "" {
		return err
	}
	st := status.Convert(err)
	md := map[string]string{"node": node}
	if deviceID != "" {
		md["device_id"] = deviceID
	}
	for k, v := range extra {
		md[k] = v
	}
	out, derr := st.WithDetails(&errdetails.ErrorInfo{Domain: ErrorDomain, Reason: reason, Metadata: md})
	if derr != nil {
		return err
	}
	return out.Err()
}

// markf builds a status error with an ErrorInfo of reason.
func markf(c codes.Code, reason, deviceID, node, format string, args ...any) error {
	return mark(status.Errorf(c, format, args...), reason, deviceID, node)
}

// notSentf builds an OWNER_UNREACHABLE error for a request that was never
// sent to the owner.
func notSentf(deviceID, node, format string, args ...any) error {
	return markMD(status.Errorf(codes.Unavailable, format, args...), ReasonOwnerUnreachable, deviceID, node, map[string]string{MetadataNotSent: "true"})
}

// NotDelivered reports whether err says for certain that the operation
// never reached the device's session: NOT_HELD, or OWNER_UNREACHABLE raised
// before anything was sent.
func NotDelivered(err error) bool {
	ei := info(err)
	if ei == nil {
		return false
	}
	return ei.GetReason() == ReasonNotHeld || ei.GetReason() == ReasonOwnerUnreachable && ei.GetMetadata()[MetadataNotSent] == "true"
}

// Reason returns the tether.dev ErrorInfo reason of err ("" if none).
func Reason(err error) string { return info(err).GetReason() }

func info(err error) *errdetails.ErrorInfo {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.GRPCStatus().Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.GetDomain() == ErrorDomain {
			return ei
		}
	}
	return nil
}
