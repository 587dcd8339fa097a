// Package access decides who may call what on a Tether replica, and how
// often: device credentials (client certificates and signed device tokens)
// for AgentService, API keys with roles for DeviceService, reflection and
// admin calls, the cluster secret (or a peer certificate) for PeerService,
// and a per-source-IP rate limit on agent streams. It provides the gRPC
// interceptors that enforce all of it, the TLS configuration that reloads
// rotated files, and the per-RPC credentials replicas send to each other.
//
// It must not know about sessions or the registry's records: it hands the
// authenticated device identity to the session hub through the stream's
// context (DeviceFrom), and the hub checks it against the Hello.
package access
