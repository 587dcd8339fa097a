// Package proxyproto owns the PROXY protocol version 2 header that an L4
// load balancer (HAProxy, AWS NLB, Envoy, nginx stream) puts in front of a
// TCP connection to say who the client really is: a bounded binary parser
// (Parse) and a net.Listener wrapper (Listener) that reads the header only
// on connections from trusted source networks, so that per-IP limits and
// the remote addresses Tether records name the device, not the balancer.
//
// It does not speak version 1 (the text form) and never trusts a header
// from a source outside the configured networks: there, the connection is
// passed through untouched and its TCP peer address is the remote address.
// A trusted source may also connect without a header (the in-process
// gateway, a replica forwarding a command).
package proxyproto
