// Package gateway is Tether's HTTP/JSON front door: it translates the REST
// routes of tether.v1.DeviceService (see api/tether/v1/gateway.yaml) to gRPC
// calls on one or more Tether servers, using grpc-gateway's runtime, and adds
// what a browser-facing edge needs: JSON errors with the gRPC code, a request
// body limit, a strict Content-Type rule, an allow-list of forwarded headers,
// request ids, one log line per request, CORS, the embedded OpenAPI document,
// and health endpoints backed by the gRPC health service.
//
// New dials the servers and returns a Gateway (used by tether-gateway), whose
// Serve and Run follow net/http: they serve until the context ends, then
// drain. NewHandler wraps a connection the caller owns and returns just the
// http.Handler (used by tether-server --http to serve the same routes
// in-process). In-process, Config.LocalWatch serves the watch route from the
// server's event feed without a gRPC stream, and an HTTP/1.1 watch's
// connection is taken over after its first line so that the feed can write
// events to it directly (localwatch.go).
//
// The package must not hold fleet state or business rules: every answer comes
// from a Tether server, and every error is the server's gRPC status mapped to
// HTTP, except for the few the gateway itself raises (404, 405, 413, 415,
// malformed JSON). docs/GATEWAY.md describes the HTTP contract.
package gateway
