// Package deviceapi implements tether.v1.DeviceService — the fleet API the
// JSON gateway and grpcurl users call — on top of the registry (what is
// known) and the fleet router (server/router: running an operation on a
// device's session wherever it is held, and merging live session state
// into records).
//
// It owns request validation and the mapping of registry results to gRPC
// status codes; it never writes the registry except through a session. It
// also owns the API's budgets: ListDevices pages bounded by count and bytes,
// watch caps per replica and per API key, the bound on concurrent snapshot
// and catch-up reads, and the bound on one Send of a watch stream (a client
// that reads nothing loses its watch). Live watch events come from the
// replica's one event feed (server/feed), which the Service starts with the
// first watch.
package deviceapi
