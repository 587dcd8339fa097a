// Package e2e holds the end-to-end tests: they build the real binaries
// (tether-server, tether-agent, tether-gateway), start them as processes on
// loopback ports, and talk to them over real sockets, with real redis-server
// processes where Redis is under test. Nothing here is imported by the
// product.
package e2e
