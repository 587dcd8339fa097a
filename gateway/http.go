package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	tetherv1gw "github.com/tetherhq/tether/api/gw/tether/v1"
	"github.com/tetherhq/tether/api/openapi"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway/ui"
)

// Routes the gateway serves besides the generated /v1 API.
const (
	openAPIPath = "/openapi.json"
	healthzPath = "/healthz"
	readyzPath  = "/readyz"
)

// requestIDHeader is the header a client may set, forwarded to the server as
// x-request-id metadata and always returned in the response.
const requestIDHeader = "X-Request-Id"

// bodyReadTimeout bounds reading a request body of at most MaxBodyBytes.
const bodyReadTimeout = 30 * time.Second

// bodyWait is how long a request waits for one of the MaxBodyReads slots
// before it is answered 429.
const bodyWait = time.Second

// maxRequestIDLen bounds a client's X-Request-Id; a longer one is replaced.
const maxRequestIDLen = 128

// droppedRequestHeaders are removed before grpc-gateway sees the request:
// grpc-gateway turns X-Forwarded-For and X-Forwarded-Host into metadata (adding
// the peer address, which it still does) and Grpc-Timeout into a deadline, and
// none of these may be chosen by a client.
var droppedRequestHeaders = []string{"X-Forwarded-For", "X-Forwarded-Host", "Grpc-Timeout"}

// forwardHeader is the runtime.HeaderMatcherFunc for incoming headers: only
// X-Request-Id becomes metadata. Authorization is forwarded by grpc-gateway
// itself, unprefixed; every other header (Grpc-Metadata-*, Cookie, ...) stays
// at the gateway.
func forwardHeader(key string) (string, bool) {
	if textproto.CanonicalMIMEHeaderKey(key) == requestIDHeader {
		return "x-request-id", true
	}
	return "", false
}

// dropHeader is the runtime.HeaderMatcherFunc for the server's response
// headers and trailers: none reach the HTTP client.
func dropHeader(string) (string, bool) { return "", false }

// newAPIMux builds the grpc-gateway mux with the generated DeviceService
// routes and the gateway's own.
func (g *Gateway) newAPIMux(ctx context.Context) (*runtime.ServeMux, error) {
	mux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, newJSONMarshaler()),
		runtime.WithErrorHandler(handleError),
		runtime.WithRoutingErrorHandler(g.handleRoutingError),
		runtime.WithStreamErrorHandler(g.streamError),
		runtime.WithIncomingHeaderMatcher(forwardHeader),
		runtime.WithOutgoingHeaderMatcher(dropHeader),
		runtime.WithOutgoingTrailerMatcher(dropHeader),
		runtime.WithDisableHTTPMethodOverride(),
		runtime.WithDisablePathLengthFallback(),
		runtime.WithMiddlewares(g.checkMethod, g.markRoute, g.shortEnums, g.checkBody, g.prepareStream),
	)
	if err := tetherv1gw.RegisterDeviceServiceHandlerClient(ctx, mux, newSplitClient(g.conn, g.streams)); err != nil {
		return nil, fmt.Errorf("gateway: register DeviceService: %w", err)
	}
	if err := tetherv1gw.RegisterJobServiceHandlerClient(ctx, mux, tetherv1.NewJobServiceClient(g.conn)); err != nil {
		return nil, fmt.Errorf("gateway: register JobService: %w", err)
	}
	if g.cfg.LocalWatch != nil {
		// Registered after the generated routes, so it takes precedence.
		if err := mux.HandlePath(http.MethodGet, watchPath, g.serveLocalWatch(mux)); err != nil {
			return nil, fmt.Errorf("gateway: route %s: %w", watchPath, err)
		}
	}
	doc := openapi.JSON()
	table, err := newRouteTable(doc, openAPIPath, healthzPath, readyzPath)
	if err != nil {
		return nil, err
	}
	g.routes = table
	routes := map[string]runtime.HandlerFunc{
		openAPIPath: func(w http.ResponseWriter, _ *http.Request, _ map[string]string) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(doc)
		},
		healthzPath: func(w http.ResponseWriter, r *http.Request, _ map[string]string) { g.serveHealth(w, r, false) },
		readyzPath:  func(w http.ResponseWriter, r *http.Request, _ map[string]string) { g.serveHealth(w, r, true) },
	}
	for path, h := range routes {
		if err := mux.HandlePath(http.MethodGet, path, h); err != nil {
			return nil, fmt.Errorf("gateway: route %s: %w", path, err)
		}
	}
	return mux, nil
}

// fleetPage serves the embedded operators' page at / and /ui/.
var fleetPage = ui.Handler()

// serveHTTP is the gateway's outer layer, around every request: request id,
// header clean-up, CORS, the body limit, the log line and the metrics.
func (g *Gateway) serveHTTP(w http.ResponseWriter, r *http.Request, api http.Handler) {
	start := time.Now()
	r = r.Clone(r.Context())
	r, route := withRequestRoute(r)
	id := requestID(r.Header.Get(requestIDHeader))
	r.Header.Set(requestIDHeader, id)
	for _, h := range droppedRequestHeaders {
		r.Header.Del(h)
	}
	rec := &responseRecorder{ResponseWriter: w}
	rec.Header().Set(requestIDHeader, id)
	rec.Header().Set("X-Content-Type-Options", "nosniff") // every response, errors and the page included

	switch {
	case g.applyCORS(rec, r):
	case !validUTF8(r.URL):
		// Path and query values become proto strings, which must be UTF-8;
		// the gRPC client would otherwise fail the call as INTERNAL.
		writeError(rec, http.StatusBadRequest, codes.InvalidArgument, "request path or query is not valid UTF-8")
	case r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, ui.Prefix):
		// The operators' fleet page (gateway/ui), on the API's origin.
		fleetPage.ServeHTTP(rec, r)
	case g.cfg.RequireCredentials && strings.HasPrefix(r.URL.Path, "/v1/") && r.Header.Get("Authorization") == "":
		// Refused before a byte of the body is read: an anonymous client
		// cannot make the gateway buffer anything.
		rec.Header().Set("WWW-Authenticate", "Bearer")
		writeError(rec, http.StatusUnauthorized, codes.Unauthenticated, "API key required: Authorization: Bearer <key>")
	default:
		r.Body = http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes)
		api.ServeHTTP(rec, r)
	}

	status := rec.statusCode()
	elapsed := time.Since(start)
	g.cfg.Metrics.observe(route.label(), status, elapsed)
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelWarn
	case status < 300 && (r.URL.Path == healthzPath || r.URL.Path == readyzPath):
		level = slog.LevelDebug // probes every few seconds would drown the rest
	}
	g.log.LogAttrs(r.Context(), level, "http request",
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", route.label()),
		slog.Int("status", status),
		slog.Duration("duration", elapsed),
		slog.String("request_id", id),
		slog.String("remote", r.RemoteAddr),
	)
}

// requestID returns the client's X-Request-Id when it is short and made of
// [A-Za-z0-9._:-], or a new random one.
func requestID(client string) string {
	if client != "" && len(client) <= maxRequestIDLen && strings.Trim(client,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-") == "" {
		return client
	}
	return rand.Text()
}

// validUTF8 reports whether u's path and decoded query keys and values are
// valid UTF-8.
func validUTF8(u *url.URL) bool {
	if !utf8.ValidString(u.Path) {
		return false
	}
	for k, vs := range u.Query() {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// checkMethod is a runtime.Middleware: grpc-gateway matched a route, but the
// route table may know the path as another method's custom method (GET
// /v1/devices/d1:command matches GetDevice's {device_id}); that is a 405.
func (g *Gateway) checkMethod(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if allowed := g.routes.allowed(r.URL.Path); len(allowed) > 0 && !slices.Contains(allowed, r.Method) {
			g.handleRoutingError(r.Context(), nil, nil, w, r, http.StatusMethodNotAllowed)
			return
		}
		next(w, r, params)
	}
}

// checkBody is a runtime.Middleware: for a POST that matched a route it
// requires Content-Type application/json (415), reads the body within
// MaxBodyBytes (413) and requires it to be one well-formed JSON value or
// empty (400), so that the generated code decodes a complete, bounded body.
func (g *Gateway) checkBody(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if r.Method != http.MethodPost {
			next(w, r, params)
			return
		}
		if !isJSONContentType(r.Header.Get("Content-Type")) {
			writeError(w, http.StatusUnsupportedMediaType, codes.InvalidArgument,
				"Content-Type must be application/json, got %q", r.Header.Get("Content-Type"))
			return
		}
		// At most MaxBodyReads bodies are buffered at once.
		t := time.NewTimer(bodyWait)
		select {
		case g.bodies <- struct{}{}:
			t.Stop()
		case <-t.C:
			writeError(w, http.StatusTooManyRequests, codes.ResourceExhausted,
				"the gateway is already reading %d request bodies; retry shortly", cap(g.bodies))
			return
		case <-r.Context().Done():
			t.Stop()
			return
		}
		defer func() { <-g.bodies }()
		// The server has no ReadTimeout (it would cut watch streams), so the
		// body read gets its own deadline; a trickled body cannot hold a
		// handler forever. Writers without deadlines (tests) just skip it.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(bodyReadTimeout))
		body, err := io.ReadAll(r.Body)
		_ = rc.SetReadDeadline(time.Time{})
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, codes.ResourceExhausted,
				"request body is larger than %d bytes", mbe.Limit)
			return
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, codes.InvalidArgument, "reading request body: %v", err)
			return
		}
		if len(bytes.TrimSpace(body)) > 0 {
			var v json.RawMessage
			if err := json.Unmarshal(body, &v); err != nil {
				writeError(w, http.StatusBadRequest, codes.InvalidArgument, "malformed JSON request body: %s", jsonErrorText(err))
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next(w, r, params)
	}
}

// isJSONContentType reports whether ct is application/json, with no charset
// or charset=utf-8.
func isJSONContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// jsonErrorText describes a JSON syntax error with its byte offset.
func jsonErrorText(err error) string {
	if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	return err.Error()
}

// prepareStream is a runtime.Middleware for the watch route: it turns off
// proxy buffering and ties the stream to the gateway's lifetime, so that a
// draining gateway ends it (see streamError) instead of waiting for it.
func (g *Gateway) prepareStream(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		if pat, ok := runtime.HTTPPattern(r.Context()); !ok || pat.Verb() != "watch" {
			next(w, r, params)
			return
		}
		if max := g.cfg.MaxWatches; max > 0 {
			if n := g.watches.Add(1); n > int64(max) {
				g.watches.Add(-1)
				writeError(w, http.StatusTooManyRequests, codes.ResourceExhausted,
					"this gateway already serves %d watch streams (its limit, --max-watches); retry later", max)
				return
			}
			defer g.watches.Add(-1)
		}
		h := w.Header()
		h.Set("X-Accel-Buffering", "no")
		h.Set("Cache-Control", "no-store")
		g.cfg.Metrics.watcherDelta(1)
		defer g.cfg.Metrics.watcherDelta(-1)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(g.draining, cancel)
		defer stop()
		next(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: g.cfg.WatchWriteTimeout}, r.WithContext(ctx), params)
	}
}

// deadlineWriter gives each write and flush of a watch response a deadline
// (Config.WatchWriteTimeout): a client that stops reading fills its socket
// buffers, and without one the write would hold the watch, its slot and its
// goroutine until the client reads or goes.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls.
func (d *deadlineWriter) FlushError() error {
	_ = d.rc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.rc.Flush()
}

// Flush is for runtime.ForwardResponseStream, which needs an http.Flusher.
func (d *deadlineWriter) Flush() { _ = d.FlushError() }

// Unwrap lets http.ResponseController reach the connection (Hijack).
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// streamError is the runtime.StreamErrorHandlerFunc: the status of the error
// line that ends a stream. A stream cut because the gateway is draining ends
// with UNAVAILABLE, which tells the client to reconnect and resume.
func (g *Gateway) streamError(_ context.Context, err error) *status.Status {
	st := status.Convert(err)
	if st.Code() == codes.Canceled && g.draining.Err() != nil {
		return status.New(codes.Unavailable, "gateway is shutting down; reconnect with afterEventId to resume")
	}
	return st
}

// serveHealth answers /healthz and /readyz: 200 {"status":"ok"} when a Tether
// server reachable through the connection reports SERVING for the whole
// server ("") within HealthTimeout, otherwise 503. /readyz is also 503 while
// the gateway drains, so that load balancers stop sending it requests.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request, readiness bool) {
	w.Header().Set("Cache-Control", "no-store")
	if readiness && g.draining.Err() != nil {
		writeError(w, http.StatusServiceUnavailable, codes.Unavailable, "gateway is shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.cfg.HealthTimeout)
	defer cancel()
	resp, err := g.health.Check(ctx, &grpc_health_v1.HealthCheckRequest{})
	if err == nil && resp.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
		err = status.Errorf(codes.Unavailable, "server reports %s", resp.GetStatus())
	}
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, codes.Unavailable,
			"no SERVING Tether server reachable: %s", status.Convert(err).Message())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"ok"}`)
}

// applyCORS adds the CORS headers for an allowed Origin and answers a
// preflight request (OPTIONS with Access-Control-Request-Method) itself,
// reporting whether it did. Without CORSAllowedOrigins it does nothing.
func (g *Gateway) applyCORS(w http.ResponseWriter, r *http.Request) (answered bool) {
	origin := r.Header.Get("Origin")
	if !g.origins.enabled() || origin == "" {
		return false
	}
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	h := w.Header()
	h.Add("Vary", "Origin")
	if preflight {
		h.Add("Vary", "Access-Control-Request-Method")
		h.Add("Vary", "Access-Control-Request-Headers")
	}
	if g.origins.allows(origin) {
		if g.origins.any {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		h.Set("Access-Control-Expose-Headers", requestIDHeader)
		if preflight {
			h.Set("Access-Control-Allow-Methods", "GET, POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	if preflight {
		w.WriteHeader(http.StatusNoContent) // a refused origin gets no CORS headers; the browser blocks it
	}
	return preflight
}

// responseRecorder remembers the status for the log line. It passes only the
// first WriteHeader on, and Unwrap lets http.ResponseController (which
// grpc-gateway uses to flush each stream line) reach the real writer.
type responseRecorder struct {
	http.ResponseWriter
	status int
}

func (rr *responseRecorder) WriteHeader(code int) {
	if rr.status != 0 {
		return
	}
	rr.status = code
	rr.ResponseWriter.WriteHeader(code)
}

func (rr *responseRecorder) Write(b []byte) (int, error) {
	if rr.status == 0 {
		rr.status = http.StatusOK
	}
	return rr.ResponseWriter.Write(b)
}

func (rr *responseRecorder) Unwrap() http.ResponseWriter { return rr.ResponseWriter }

func (rr *responseRecorder) statusCode() int {
	if rr.status == 0 {
		return http.StatusOK
	}
	return rr.status
}
