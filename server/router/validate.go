package router

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tetherhq/tether/api/deviceid"
)

// Limits on a command.
const (
	DefaultCommandTimeout = 10 * time.Second
	MaxCommandTimeout     = 5 * time.Minute
	MaxCommandArgs        = 64
	MaxCommandArgBytes    = 4096
	MaxCommandNameBytes   = 64
)

// ValidID checks a device id (INVALID_ARGUMENT).
func ValidID(id string) error {
	if err := deviceid.Validate(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "device_id: %v", err)
	}
	return nil
}

// ValidateCommand checks a command request's name and args.
func ValidateCommand(name string, args []string) error {
	if name == "" {
		return status.Error(codes.InvalidArgument, "name: the command name is required")
	}
	if len(name) > MaxCommandNameBytes {
		return status.Errorf(codes.InvalidArgument, "name: longer than %d bytes", MaxCommandNameBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return status.Errorf(codes.InvalidArgument, "name: character %q not allowed; use [A-Za-z0-9._-]", rune(c))
		}
	}
	if len(args) > MaxCommandArgs {
		return status.Errorf(codes.InvalidArgument, "args: %d arguments, at most %d allowed", len(args), MaxCommandArgs)
	}
	for i, a := range args {
		if len(a) > MaxCommandArgBytes {
			return status.Errorf(codes.InvalidArgument, "args[%d]: longer than %d bytes", i, MaxCommandArgBytes)
		}
	}
	return nil
}

// CommandTimeout validates and defaults a requested timeout.
func CommandTimeout(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return DefaultCommandTimeout, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v", err)
	}
	t := d.AsDuration()
	switch {
	case t < 0:
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v is negative", t)
	case t == 0:
		return DefaultCommandTimeout, nil
	case t > MaxCommandTimeout:
		return 0, status.Errorf(codes.InvalidArgument, "timeout: %v exceeds the maximum of %v", t, MaxCommandTimeout)
	}
	return t, nil
}
