// Package router owns fleet routing: the one layer between the APIs
// (DeviceService, JobService) and the sessions. It finds the replica that
// holds a device, runs an operation there — on the local session hub, or
// over one generic peer call (PeerService.Invoke) carrying the lease it saw
// in the registry — and marks every error the owner produced with a
// google.rpc.ErrorInfo (domain "tether.dev", reasons OWNER_ANSWER,
// NOT_HELD, OWNER_UNREACHABLE) so that callers never decide by an error's
// text who answered. It also merges a replica's live session state into
// what the registry says of a device (Device), and serves PeerService
// (Invoke, and the legacy ForwardCommand/ForwardDisconnect for replicas of
// older versions during a rolling upgrade).
package router
