// Package server assembles a Tether replica: the gRPC server (AgentService,
// DeviceService, health, reflection) with HTTP/2 keepalive enforcement, the
// session hub, the registry store (Redis or the embedded in-memory store),
// the optional in-process JSON gateway and the metrics endpoint, and their
// graceful shutdown.
//
// It owns wiring and lifecycle only; behaviour lives in the sub-packages:
// session (streams and liveness), registry (the store contract and stores),
// deviceapi (the fleet API) and metrics.
package server
