// Package deviceapi implements tether.v1.DeviceService — the fleet API the
// JSON gateway and grpcurl users call — on top of the registry (what is
// known) and the local session hub (what this replica holds).
//
// It owns request validation and the mapping of registry results to gRPC
// status codes; it never writes the registry except through a session.
package deviceapi
