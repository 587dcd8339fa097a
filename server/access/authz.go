package access

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

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
	// Limiter limits AgentService streams per source IP; nil = no limit.
	Limiter *Limiter
	// Logger receives refusals at debug level.
	Logger *slog.Logger
	// Now is the clock for token expiry and peer proofs (default time.Now).
	Now func() time.Time
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
)

// methodRoles is the role each DeviceService method needs. Methods not
// listed here (reflection, admin, anything added later) need RoleAdmin.
var methodRoles = map[string]Role{
	devicePrefix + "ListDevices":      RoleViewer,
	devicePrefix + "GetDevice":        RoleViewer,
	devicePrefix + "WatchDevices":     RoleViewer,
	devicePrefix + "SendCommand":      RoleOperator,
	devicePrefix + "DisconnectDevice": RoleOperator,
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
	ctx, err := p.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// Stream is the stream server interceptor.
func (p *Policy) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := p.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if ctx != ss.Context() {
		ss = &ctxStream{ServerStream: ss, ctx: ctx}
	}
	return handler(srv, ss)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

func (p *Policy) authorize(ctx context.Context, method string) (context.Context, error) {
	var err error
	switch {
	case strings.HasPrefix(method, healthPrefix):
		return ctx, nil
	case strings.HasPrefix(method, agentPrefix):
		ctx, err = p.authorizeDevice(ctx)
	case strings.HasPrefix(method, peerPrefix):
		err = p.authorizePeer(ctx)
	default:
		err = p.authorizeKey(ctx, method)
	}
	if err != nil {
		p.log().Debug("call refused", "method", method, "remote", remoteString(ctx), "err", err)
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

func verifiedLeaf(ctx context.Context) (cert *x509.Certificate, deviceID, peerName string) {
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
	id, _ := DeviceIDFromCert(leaf)
	return leaf, id, ""
}

// authorizeDevice applies the rate limit, then (when device auth is on)
// finds the device identity: a verified client certificate, or a valid,
// unrevoked token.
func (p *Policy) authorizeDevice(ctx context.Context) (context.Context, error) {
	if !p.Limiter.Allow(remoteAddr(ctx)) {
		return ctx, status.Error(codes.ResourceExhausted, "too many streams from this address; retry with backoff")
	}
	if !p.DeviceAuth() {
		return ctx, nil
	}
	if p.MutualTLS {
		if leaf, id, _ := verifiedLeaf(ctx); leaf != nil && id != "" {
			return WithDevice(ctx, Device{ID: id}), nil
		}
	}
	tok := bearer(ctx)
	if tok == "" || p.Tokens == nil {
		return ctx, status.Error(codes.Unauthenticated, "device credentials required: a client certificate or a device token (authorization: Bearer <token>)")
	}
	t, err := p.Tokens.Verify(tok, p.now())
	if err != nil {
		return ctx, status.Errorf(codes.Unauthenticated, "device token refused: %v", err)
	}
	if p.Revocations != nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		revoked, err := p.Revocations.Revoked(rctx, t.ID)
		cancel()
		if err != nil {
			return ctx, status.Errorf(codes.Unavailable, "cannot check the token deny list, retry with backoff: %v", err)
		}
		if revoked {
			return ctx, status.Errorf(codes.Unauthenticated, "device token %s has been revoked", t.ID)
		}
	}
	return WithDevice(ctx, Device{ID: t.DeviceID, TokenID: t.ID, Expiry: t.Expiry}), nil
}

// authorizePeer admits a replica: a verified peer certificate, or a valid
// cluster proof. Without a secret, in dev mode, loopback callers are
// admitted. Everything else is PERMISSION_DENIED, whatever else it holds.
func (p *Policy) authorizePeer(ctx context.Context) error {
	if p.MutualTLS {
		if _, _, name := verifiedLeaf(ctx); name != "" {
			return nil
		}
	}
	if len(p.ClusterSecret) > 0 {
		md, _ := metadata.FromIncomingContext(ctx)
		for _, v := range md.Get(PeerHeader) {
			if CheckPeerProof(p.ClusterSecret, v, p.now()) {
				return nil
			}
		}
		return status.Error(codes.PermissionDenied, "PeerService is for the replicas of this cluster only")
	}
	if p.Dev() && remoteAddr(ctx).IsLoopback() {
		return nil
	}
	return status.Error(codes.PermissionDenied, "PeerService is for the replicas of this cluster only (configure --cluster-secret-file on every replica)")
}

// authorizeKey checks the API key and its role.
func (p *Policy) authorizeKey(ctx context.Context, method string) error {
	if p.APIKeys.Len() == 0 {
		return nil
	}
	key := bearer(ctx)
	if key == "" {
		return status.Error(codes.Unauthenticated, "API key required: authorization: Bearer <key>")
	}
	k, ok := p.APIKeys.Lookup(key)
	if !ok {
		return status.Error(codes.Unauthenticated, "unknown API key")
	}
	if need := RequiredRole(method); k.Role < need {
		return status.Errorf(codes.PermissionDenied, "API key %q has role %s; %s needs %s", k.Name, k.Role, method, need)
	}
	return nil
}
