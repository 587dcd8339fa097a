// Package audit owns the audit trail of a Tether replica: one structured
// Info line ("audit") per state-changing call (SendCommand,
// DisconnectDevice, AdminService, the PeerService forwards) naming the
// caller, its source address, the device, the command and a digest of its
// arguments, and the outcome; one rate-limited Warn line ("auth refused")
// per refused authentication with its reason; and the counter
// tether_auth_refusals_total{reason}. The line format is documented in
// docs/ADMIN.md.
//
// It does not decide who may call what (package access does, and records
// the caller it authenticated with WithCaller), and it does not store the
// lines anywhere but the logger.
package audit
