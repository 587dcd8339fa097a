// Package access decides who may call what on a Tether replica, and how
// often: device credentials (client certificates and signed device tokens)
// for AgentService, API keys with roles for DeviceService, reflection and
// admin calls, the cluster secret (or a peer certificate) for PeerService,
// and a per-source-IP rate limit on agent streams. It provides the gRPC
// interceptors that enforce all of it (recording the authenticated caller
// for the audit trail, and counting refusals by reason), the TLS
// configuration that reloads rotated files, the replay-proof peer proofs
// replicas send to each other (PeerInterceptor, bound to both nodes, the
// method and the request), reflection split by credential, and the checks
// on secret files (permissions, one file per secret, systemd's
// $CREDENTIALS_DIRECTORY).
//
// It must not know about sessions or the registry's records: it hands the
// authenticated device identity to the session hub through the stream's
// context (DeviceFrom), and the hub checks it against the Hello.
package access
