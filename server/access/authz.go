package access

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/tetherhq/tether/server/audit"
	"github.com/tetherhq/tether/server/registry"
)

// Policy is what the interceptors enforce. The zero value is dev mode:
// everything is allowed, except PeerService from non-loopback addresses.
type Policy struct {
	// Tokens verifies device tokens on AgentService; nil = not accepted.
	Tokens *Signer
	// Revocations is the token deny list; nil = none.
	Revocations registry.Revocations
	// MutualTLS: client certificates are verified against a client CA, so a
	// device may authenticate with one.
	MutualTLS bool
	// APIKeys, when non-empty, are required on DeviceService, reflection
	// and admin calls; nil = those are open (dev mode).
	APIKeys *APIKeys
	// ClusterSecret authenticates PeerService callers (x-tether-peer).
	ClusterSecret []byte
	// Node is this replica's node name: peer proofs must be addressed to it.
	Node string
	// KnownPeer reports whether a peer's node name (from its certificate or
	// its proof) belongs to this cluster: a live node in the registry or an
	// allow-listed name. nil = any name.
	KnownPeer func(ctx context.Context, node string) (bool, error)
	// CertCN lets a client certificate without a tether://device/ URI SAN
	// name its device with the subject CN (legacy; off by default).
	CertCN bool
	// Limiter limits AgentService streams per source IP; nil = no limit.
	Limiter *Limiter
	// Audit counts and logs refusals; nil = only a debug line.
	Audit *audit.Log
	// Logger receives refusals at debug level.
	Logger *slog.Logger
	// Now is the clock for token expiry and peer proofs (default time.Now).
	Now func() time.Time

	replayOnce sync.Once
	replay     *replayCache
}

// DeviceAuth reports whether AgentService requires device credentials.
func (p *Policy) DeviceAuth() bool { return p.Tokens != nil || p.MutualTLS }

// Dev reports whether nothing at all is authenticated.
func (p *Policy) Dev() bool {
	return !p.DeviceAuth() && p.APIKeys.Len() == 0 && len(p.ClusterSecret) == 0
}

// Device is an authenticated device identity.
type Device struct {
	// ID is the only device id the caller may Hello as.
	ID string
	// TokenID is the token's id when the device used a token ("" for a
	// certificate).
	TokenID string
	// Expiry is the token's expiry (zero for a certificate).
	Expiry time.Time
}

type deviceKey struct{}

// WithDevice returns ctx carrying d.
func WithDevice(ctx context.Context, d Device) context.Context {
	return context.WithValue(ctx, deviceKey{}, d)
}

// DeviceFrom returns the authenticated device of a stream, if any. Without
// one (dev mode) the Hello's device id is taken as given.
func DeviceFrom(ctx context.Context) (Device, bool) {
	d, ok := ctx.Value(deviceKey{}).(Device)
	return d, ok
}

// Method classes.
const (
	agentPrefix  = "/tether.v1.AgentService/"
	peerPrefix   = "/tether.v1.PeerService/"
	healthPrefix = "/grpc.health.v1.Health/"
	devicePrefix = "/tether.v1.DeviceService/"
	jobPrefix    = "/tether.v1.JobService/"

	reflectionV1      = "/grpc.reflection.v1.ServerReflection/"
	reflectionV1Alpha = "/grpc.reflection.v1alpha.ServerReflection/"
)

func isReflection(method string) bool {
	return strings.HasPrefix(method, reflectionV1) || strings.HasPrefix(method, reflectionV1Alpha)
}

// methodRoles is the role each DeviceService method needs. Methods not
// listed here (admin, anything added later) need RoleAdmin. Reflection is
// open to every role (the schema is public: /openapi.json); without a key
// it describes the health service only.
var methodRoles = map[string]Role{
	reflectionV1 + "ServerReflectionInfo":      RoleViewer,
	reflectionV1Alpha + "ServerReflectionInfo": RoleViewer,
	devicePrefix + "ListDevices":               RoleViewer,
	devicePrefix + "GetDevice":                 RoleViewer,
	devicePrefix + "WatchDevices":              RoleViewer,
	devicePrefix + "SendCommand":               RoleOperator,
	devicePrefix + "DisconnectDevice":          RoleOperator,
	devicePrefix + "GetDeviceHistory":          RoleViewer,
	devicePrefix + "GetInventory":              RoleViewer,
	devicePrefix + "ListNodes":                 RoleViewer,
	devicePrefix + "PreRegisterDevice":         RoleOperator,
	devicePrefix + "DeleteDevice":              RoleAdmin,
	// Jobs send commands, and their results hold command output: every
	// JobService method is for operators.
	jobPrefix + "CreateJob":      RoleOperator,
	jobPrefix + "GetJob":         RoleOperator,
	jobPrefix + "ListJobs":       RoleOperator,
	jobPrefix + "ListJobResults": RoleOperator,
	jobPrefix + "CancelJob":      RoleOperator,
}

// RequiredRole is the API-key role a method needs (RoleNone: not an
// API-key method: health, AgentService, PeerService).
func RequiredRole(method string) Role {
	switch {
	case strings.HasPrefix(method, healthPrefix), strings.HasPrefix(method, agentPrefix), strings.HasPrefix(method, peerPrefix):
		return RoleNone
	}
	if r, ok := methodRoles[method]; ok {
		return r
	}
	return RoleAdmin
}

func (p *Policy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Policy) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// Unary is the unary server interceptor.
func (p *Policy) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := p.authorize(ctx, info.FullMethod, req)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (p *Policy) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := p.authorize(ss.Context(), info.FullMethod, nil)
	if err != nil {
		return err
	}
	if ctx != ss.Context() {
		ss = &ctxStream{ServerStream: ss, ctx: ctx}
	}
	err = handler(srv, ss)
	if strings.HasPrefix(info.FullMethod, agentPrefix) && status.Code(err) == codes.PermissionDenied {
		// The session hub refuses a Hello for another device than the
		// credentials name: an authentication refusal too.
		p.Audit.Refused(ctx, "device_mismatch", info.FullMethod, err)
	}
	return err
}

// AuthorizeStream authorizes a streaming call made in-process, without a gRPC
// stream (the in-process gateway's watches): ctx carries the caller's
// incoming metadata. It is what Stream checks, with the same refusals,
// audit records and counters.
func (p *Policy) AuthorizeStream(ctx context.Context, method string) (context.Context, error) {
	return p.authorize(ctx, method, nil)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// refusal is a refused call: the status the caller gets and the reason
// counted and logged (internal detail goes to the log only).
type refusal struct {
	reason string
	st     *status.Status
	detail error // logged, never sent
}

func (r *refusal) Error() string              { return r.st.Err().Error() }
func (r *refusal) GRPCStatus() *status.Status { return r.st }

func refuse(reason string, code codes.Code, msg string) *refusal {
	return &refusal{reason: reason, st: status.New(code, msg)}
}

// authorize authenticates the call and records its caller in the context
// (audit.WithCaller). req is the request of a unary call (nil for
// streams): peer proofs are bound to it.
func (p *Policy) authorize(ctx context.Context, method string, req any) (context.Context, error) {
	var err error
	switch {
	case strings.HasPrefix(method, healthPrefix):
		return audit.WithCaller(ctx, audit.Caller{Kind: "anonymous"}), nil
	case strings.HasPrefix(method, agentPrefix):
		ctx, err = p.authorizeDevice(ctx)
	case strings.HasPrefix(method, peerPrefix):
		ctx, err = p.authorizePeer(ctx, method, req)
	default:
		ctx, err = p.authorizeKey(ctx, method)
	}
	if err != nil {
		reason, detail := "refused", error(nil)
		var r *refusal
		if errors.As(err, &r) {
			reason, detail = r.reason, r.detail
		}
		p.log().Debug("call refused", "method", method, "remote", remoteString(ctx), "reason", reason, "err", err, "detail", detail)
		p.Audit.Refused(ctx, reason, method, err)
	}
	return ctx, err
}

func bearer(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tok, ok := cutPrefixFold(strings.TrimSpace(v), "bearer "); ok {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

func remoteAddr(ctx context.Context) netip.Addr {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.Addr == nil {
		return netip.Addr{}
	}
	if ta, ok := pr.Addr.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	ap, err := netip.ParseAddrPort(pr.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func remoteString(ctx context.Context) string {
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		return pr.Addr.String()
	}
	return ""
}

func withDevice(ctx context.Context, d Device) context.Context {
	return audit.WithCaller(WithDevice(ctx, d), audit.Caller{Kind: "device", Name: d.ID})
}

func verifiedLeaf(ctx context.Context, cn bool) (cert *x509.Certificate, deviceID, peerName string) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil, "", ""
	}
	leaf, ok := VerifiedLeaf(pr.AuthInfo)
	if !ok {
		return nil, "", ""
	}
	if n, ok := PeerNameFromCert(leaf); ok {
		return leaf, "", n
	}
	id, _ := DeviceIDFromCert(leaf, cn)
	return leaf, id, ""
}

// authorizeDevice applies the rate limit, then (when device auth is on)
// finds the device identity: a verified client certificate, or a valid,
// unrevoked token.
func (p *Policy) authorizeDevice(ctx context.Context) (context.Context, error) {
	if !p.Limiter.Allow(remoteAddr(ctx)) {
		return ctx, refuse("rate_limited", codes.ResourceExhausted, "too many streams from this address; retry with backoff")
	}
	if !p.DeviceAuth() {
		return audit.WithCaller(ctx, audit.Caller{Kind: "anonymous"}), nil
	}
	if p.MutualTLS {
		if leaf, id, _ := verifiedLeaf(ctx, p.CertCN); leaf != nil && id != "" {
			return withDevice(ctx, Device{ID: id}), nil
		}
	}
	tok := bearer(ctx)
	if tok == "" || p.Tokens == nil {
		return ctx, refuse("no_credentials", codes.Unauthenticated, "device credentials required: a client certificate or a device token (authorization: Bearer <token>)")
	}
	t, err := p.Tokens.Verify(tok, p.now())
	switch {
	case errors.Is(err, ErrExpiredToken):
		return ctx, refuse("token_expired", codes.Unauthenticated, "device token refused: "+err.Error())
	case err != nil:
		return ctx, refuse("bad_token", codes.Unauthenticated, "device token refused: "+err.Error())
	}
	if p.Revocations != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		revoked, err := p.Revocations.Revoked(rctx, t.ID)
		cancel()
		if err != nil {
			r := refuse("deny_list_unavailable", codes.Unavailable, "cannot check the token deny list, retry with backoff")
			r.detail = err
			return ctx, r
		}
		if revoked {
			return ctx, refuse("token_revoked", codes.Unauthenticated, "device token "+t.ID+" has been revoked")
		}
	}
	return withDevice(ctx, Device{ID: t.DeviceID, TokenID: t.ID, Expiry: t.Expiry}), nil
}

// authorizePeer admits a replica: a verified peer certificate naming a
// node of this cluster, or a valid cluster proof for this very call (bound
// to the calling node, this node, the method and the request, within
// ±PeerWindow, never seen before). Without a secret, in dev mode, loopback
// callers are admitted. Everything else is PERMISSION_DENIED, whatever else
// it holds.
func (p *Policy) authorizePeer(ctx context.Context, method string, req any) (context.Context, error) {
	denied := func(reason string) *refusal {
		return refuse(reason, codes.PermissionDenied, "PeerService is for the replicas of this cluster only")
	}
	if p.MutualTLS {
		if _, _, name := verifiedLeaf(ctx, false); name != "" {
			if err := p.knownPeer(ctx, name); err != nil {
				return ctx, err
			}
			return audit.WithCaller(ctx, audit.Caller{Kind: "peer", Name: name}), nil
		}
	}
	if len(p.ClusterSecret) > 0 {
		md, _ := metadata.FromIncomingContext(ctx)
		proofs := md.Get(PeerHeader)
		if len(proofs) == 0 {
			return ctx, denied("no_credentials")
		}
		if req == nil { // a stream: nothing to bind the proof to
			return ctx, denied("bad_peer_proof")
		}
		digest := RequestDigest(req)
		pp, err := checkProof(p.ClusterSecret, proofs[0], p.Node, method, digest, p.now())
		if err != nil {
			return ctx, denied("bad_peer_proof")
		}
		if err := p.knownPeer(ctx, pp.from); err != nil {
			return ctx, err
		}
		p.replayOnce.Do(func() { p.replay = newReplayCache(DefaultReplayEntries) })
		switch err := p.replay.add(pp.nonce, pp.at.Add(PeerWindow+time.Second), p.now()); {
		case errors.Is(err, errReplay):
			return ctx, denied("peer_replay")
		case err != nil:
			return ctx, refuse("peer_replay_cache_full", codes.Unavailable, "too many peer calls; retry with backoff")
		}
		return audit.WithCaller(ctx, audit.Caller{Kind: "peer", Name: pp.from}), nil
	}
	if p.Dev() && remoteAddr(ctx).IsLoopback() {
		return audit.WithCaller(ctx, audit.Caller{Kind: "anonymous"}), nil
	}
	return ctx, refuse("no_credentials", codes.PermissionDenied, "PeerService is for the replicas of this cluster only (configure --cluster-secret-file on every replica)")
}

func (p *Policy) knownPeer(ctx context.Context, node string) error {
	if p.KnownPeer == nil {
		return nil
	}
	ok, err := p.KnownPeer(ctx, node)
	if err != nil {
		r := refuse("peer_check_unavailable", codes.Unavailable, "cannot check the calling replica, retry with backoff")
		r.detail = err
		return r
	}
	if !ok {
		return refuse("peer_unknown_node", codes.PermissionDenied, "PeerService is for the replicas of this cluster only")
	}
	return nil
}

type reflectionKey struct{}

// ReflectionLimited reports whether a reflection stream came without an
// API key while keys are configured: it may describe the health service
// only.
func ReflectionLimited(ctx context.Context) bool {
	v, _ := ctx.Value(reflectionKey{}).(bool)
	return v
}

// authorizeKey checks the API key and its role.
func (p *Policy) authorizeKey(ctx context.Context, method string) (context.Context, error) {
	if p.APIKeys.Len() == 0 {
		return audit.WithCaller(ctx, audit.Caller{Kind: "anonymous"}), nil
	}
	key := bearer(ctx)
	if key == "" {
		if isReflection(method) {
			ctx = context.WithValue(ctx, reflectionKey{}, true)
			return audit.WithCaller(ctx, audit.Caller{Kind: "anonymous"}), nil
		}
		return ctx, refuse("no_credentials", codes.Unauthenticated, "API key required: authorization: Bearer <key>")
	}
	k, ok := p.APIKeys.Lookup(key)
	if !ok {
		return ctx, refuse("bad_api_key", codes.Unauthenticated, "unknown API key")
	}
	ctx = audit.WithCaller(ctx, audit.Caller{Kind: "key", Name: k.Name})
	if need := RequiredRole(method); k.Role < need {
		return ctx, refuse("role_denied", codes.PermissionDenied, fmt.Sprintf("API key %q has role %s; %s needs %s", k.Name, k.Role, method, need))
	}
	return ctx, nil
}
