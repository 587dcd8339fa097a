package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Caller is who made a call, as authentication established it.
type Caller struct {
	// Kind is "key" (an API key), "peer" (another replica), "device", or
	// "anonymous" (no credentials needed: dev mode, health, reflection of
	// the health service).
	Kind string
	// Name is the API key's name, the peer's node name or the device id.
	Name string
}

// String is "key:ops-alice", "peer:node-b", "anonymous".
func (c Caller) String() string {
	if c.Kind == "" {
		return "anonymous"
	}
	if c.Name == "" {
		return c.Kind
	}
	return c.Kind + ":" + c.Name
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom is the caller recorded in ctx (anonymous if none).
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// audited are the state-changing methods: every call gets one line.
var audited = map[string]string{
	"/tether.v1.DeviceService/SendCommand":       "send_command",
	"/tether.v1.DeviceService/DisconnectDevice":  "disconnect_device",
	"/tether.v1.DeviceService/DeleteDevice":      "delete_device",
	"/tether.v1.DeviceService/PreRegisterDevice": "pre_register_device",
	"/tether.v1.PeerService/ForwardCommand":      "forward_command",
	"/tether.v1.PeerService/ForwardDisconnect":   "forward_disconnect",
	"/tether.v1.JobService/CreateJob":            "create_job",
	"/tether.v1.JobService/CancelJob":            "cancel_job",
	"/tether.v1.PeerService/Invoke":              "forward", // forward_<op>: invokeAction
}

const adminPrefix = "/tether.v1.AdminService/"

// Action is the audit action of a method ("" = not audited).
func Action(method string) string {
	if a, ok := audited[method]; ok {
		return a
	}
	if name, ok := strings.CutPrefix(method, adminPrefix); ok {
		return "admin_" + toSnake(name)
	}
	return ""
}

func toSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Log writes the audit trail.
type Log struct {
	log      *slog.Logger
	refusals *prometheus.CounterVec
	now      func() time.Time

	sink *StreamSink // nil = log only

	mu         sync.Mutex // guards the refusal-line budget
	tokens     float64
	at         time.Time
	suppressed int
}

// Refused-line budget: a burst of 20 lines, then 5 a second; the rest are
// counted and the next line says how many were suppressed.
const (
	warnBurst = 20
	warnRate  = 5
)

// New returns a Log writing to log, registering tether_auth_refusals_total
// with reg (nil: not registered).
func New(log *slog.Logger, reg prometheus.Registerer) *Log {
	if log == nil {
		log = slog.Default()
	}
	l := &Log{
		log: log,
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_auth_refusals_total",
			Help: "Calls refused by authentication or authorization, by reason (no_credentials, bad_api_key, role_denied, bad_token, token_expired, token_revoked, deny_list_unavailable, device_mismatch, bad_peer_proof, peer_replay, peer_unknown_node, rate_limited, ...).",
		}, []string{"reason"}),
		now:    time.Now,
		tokens: warnBurst,
	}
	if reg != nil {
		reg.MustRegister(l.refusals)
	}
	return l
}

// WithStream makes l also append its lines to a Redis stream.
func (l *Log) WithStream(s *StreamSink) *Log {
	l.sink = s
	return l
}

// Refusals is the refusal counter (tests).
func (l *Log) Refusals() *prometheus.CounterVec { return l.refusals }

// Refused records a refused call: the counter always, a Warn line within the
// budget.
func (l *Log) Refused(ctx context.Context, reason, method string, err error) {
	if l == nil {
		return
	}
	l.refusals.WithLabelValues(reason).Inc()
	l.mu.Lock()
	now := l.now()
	l.tokens = min(warnBurst, l.tokens+now.Sub(l.at).Seconds()*warnRate)
	l.at = now
	if l.tokens < 1 {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.tokens--
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	attrs := []any{"reason", reason, "method", method, "remote", Remote(ctx)}
	if f := forwardedFor(ctx); f != "" {
		attrs = append(attrs, "forwarded_for", f)
	}
	attrs = append(attrs, "err", status.Convert(err).Message())
	if suppressed > 0 {
		attrs = append(attrs, "suppressed", suppressed)
	}
	l.log.Warn("auth refused", attrs...)
	l.sink.add("auth refused", attrs)
}

// Remote is the source address of the call.
func Remote(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// forwardedFor is what a gateway in front said about the original client
// (grpc-gateway sets x-forwarded-for); informative only, never trusted.
func forwardedFor(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("x-forwarded-for")
	if len(v) == 0 {
		return ""
	}
	s := strings.Join(v, ",")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// ArgsDigest is the first 16 hex digits of SHA-256 over the arguments, each
// prefixed with its length: it tells runs apart without logging arguments
// that may be sensitive.
func ArgsDigest(args []string) string {
	h := sha256.New()
	var n [8]byte
	for _, a := range args {
		binary.BigEndian.PutUint64(n[:], uint64(len(a)))
		h.Write(n[:])
		h.Write([]byte(a))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

type deviceReq interface{ GetDeviceId() string }
type commandReq interface {
	GetName() string
	GetArgs() []string
}

// Unary is the interceptor that writes the audit line of state-changing
// calls. It runs after authorization (which recorded the caller).
func (l *Log) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	action := Action(info.FullMethod)
	if action == "" || l == nil {
		return handler(ctx, req)
	}
	if ir, ok := req.(*tetherv1.InvokeRequest); ok {
		action = invokeAction(ir)
	}
	start := l.now()
	resp, err := handler(ctx, req)
	l.Call(ctx, action, req, err, l.now().Sub(start))
	return resp, err
}

// Call writes one audit line for action on req with its outcome.
func (l *Log) Call(ctx context.Context, action string, req any, err error, took time.Duration) {
	caller, _ := CallerFrom(ctx)
	attrs := []any{"action", action, "caller", caller.String(), "remote", Remote(ctx)}
	if f := forwardedFor(ctx); f != "" {
		attrs = append(attrs, "forwarded_for", f)
	}
	req = unwrap(req) // peer forwards wrap the original request
	if d, ok := req.(deviceReq); ok {
		attrs = append(attrs, "device", d.GetDeviceId())
	}
	if c, ok := req.(commandReq); ok {
		attrs = append(attrs, "command", c.GetName(), "args", len(c.GetArgs()), "args_sha256", ArgsDigest(c.GetArgs()))
	}
	st := status.Convert(err)
	attrs = append(attrs, "code", st.Code().String(), "took", took.Round(time.Millisecond).String())
	if err != nil {
		msg := st.Message()
		if len(msg) > 300 {
			msg = msg[:300]
		}
		attrs = append(attrs, "err", msg)
	}
	l.log.Info("audit", attrs...)
	l.sink.add("audit", attrs)
}

// invokeAction names a PeerService.Invoke call by its operation, as the
// legacy forwards were named.
func invokeAction(r *tetherv1.InvokeRequest) string {
	switch {
	case r.GetCommand() != nil:
		return "forward_command"
	case r.GetDisconnect() != nil:
		return "forward_disconnect"
	}
	return "forward"
}

// unwrap finds the inner request of the PeerService calls.
func unwrap(req any) any {
	switch r := req.(type) {
	case *tetherv1.InvokeRequest:
		if c := r.GetCommand(); c != nil {
			return c
		}
		if d := r.GetDisconnect(); d != nil {
			return d
		}
	case *tetherv1.ForwardCommandRequest:
		if r.GetRequest() != nil {
			return r.GetRequest()
		}
	case *tetherv1.ForwardDisconnectRequest:
		if r.GetRequest() != nil {
			return r.GetRequest()
		}
	}
	return req
}
