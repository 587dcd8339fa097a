package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/audit"
	"github.com/tetherhq/tether/server/registry"
)

// Security configures TLS, authentication and admission limits. The zero
// value is dev mode: plaintext, no authentication, loopback listeners only.
// See docs/SECURITY.md.
type Security struct {
	// TLSCert and TLSKey are the server's certificate and key (PEM files,
	// re-read when they change). Both or neither.
	TLSCert, TLSKey string
	// ClientCA, if set, verifies client certificates: a device may
	// authenticate with one (URI SAN tether://device/<id>; the CN only with CertCN), a
	// replica with tether://peer/<node>. Needs TLS.
	ClientCA string
	// PeerCA verifies the other replicas' server certificates when this
	// replica forwards to them. Default: ClientCA, else the system roots.
	PeerCA string
	// TokenSecret, if set, makes the server accept device tokens signed
	// with it (tether-server token issue).
	TokenSecret []byte
	// APIKeys, if non-empty, are required on DeviceService, reflection and
	// admin calls.
	APIKeys *access.APIKeys
	// ClusterSecret authenticates replicas to each other on PeerService.
	ClusterSecret []byte
	// Insecure allows plaintext gRPC/HTTP on a non-loopback address.
	Insecure bool
	// HelloRate and HelloBurst limit new AgentService streams per source IP
	// (token bucket). Defaults 20/s and 40; a negative rate disables it.
	HelloRate  float64
	HelloBurst int
	// RateLimitLoopback also limits loopback sources (by default they are
	// exempt: behind a local TLS proxy every client would share one bucket).
	RateLimitLoopback bool
	// CertCN lets a client certificate without a tether://device/ URI SAN
	// name its device with its subject CN (legacy; off by default).
	CertCN bool
	// PeerNodes are node names accepted from peer certificates and proofs
	// besides the live nodes of the registry.
	PeerNodes []string
}

// TLS reports whether TLS is configured.
func (s Security) TLS() bool { return s.TLSCert != "" || s.TLSKey != "" }

// Dev reports whether nothing is authenticated.
func (s Security) Dev() bool {
	return s.ClientCA == "" && len(s.TokenSecret) == 0 && s.APIKeys.Len() == 0 && len(s.ClusterSecret) == 0
}

// security is the assembled form of Security.
type security struct {
	tls    *access.ServerTLS // nil without TLS
	policy *access.Policy
	audit  *audit.Log
	stream *audit.StreamSink                // nil unless AuditStreamRetention
	creds  credentials.TransportCredentials // inner server credentials
}

// isLoopback reports whether a listen address binds loopback only.
func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

func (c *Config) checkSecurity() error {
	sec := c.Security
	if (sec.TLSCert == "") != (sec.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if sec.ClientCA != "" && !sec.TLS() {
		return errors.New("--client-ca needs --tls-cert and --tls-key")
	}
	if strings.Contains(c.Session.Node, ";") {
		return fmt.Errorf("--node %q: ';' is not allowed in a node name", c.Session.Node)
	}
	for _, a := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--http", c.HTTP}, {"--metrics", c.Metrics}} {
		// With TLS, --metrics off loopback is served over HTTPS too.
		if a.addr == "" || (a.flag == "--listen" && c.Listener != nil) || sec.TLS() || sec.Insecure {
			continue
		}
		if !isLoopback(a.addr) {
			return fmt.Errorf("refusing to serve plaintext on %s %s, which is not a loopback address: "+
				"give --tls-cert and --tls-key, or --insecure to accept plaintext on a trusted network (see docs/SECURITY.md)", a.flag, a.addr)
		}
	}
	return nil
}

func (c *Config) buildSecurity(store registry.Nodes, log *slog.Logger) (*security, error) {
	sec := c.Security
	out := &security{creds: insecure.NewCredentials()}
	if sec.TLS() {
		st, err := access.NewServerTLS(access.TLSFiles{Cert: sec.TLSCert, Key: sec.TLSKey, ClientCA: sec.ClientCA}, log)
		if err != nil {
			return nil, err
		}
		out.tls = st
		out.creds = credentials.NewTLS(st.Config())
	}
	out.audit = audit.New(log, c.Registry)
	if c.AuditStreamRetention > 0 {
		if c.RedisURL == "" {
			return nil, errors.New("--audit-stream-retention needs --redis (the audit stream lives in the cluster's Redis)")
		}
		sink, err := audit.NewStreamSink(c.RedisURL, audit.DefaultStreamKey, c.AuditStreamRetention, log, c.Registry)
		if err != nil {
			return nil, err
		}
		out.stream = sink
		out.audit.WithStream(sink)
	}
	p := &access.Policy{APIKeys: sec.APIKeys, ClusterSecret: sec.ClusterSecret, MutualTLS: sec.ClientCA != "", Logger: log,
		Node: c.Session.Node, KnownPeer: knownPeer(store, sec.PeerNodes), CertCN: sec.CertCN, Audit: out.audit}
	if len(sec.TokenSecret) > 0 {
		signer, err := access.NewSigner(sec.TokenSecret)
		if err != nil {
			return nil, err
		}
		p.Tokens = signer
		if rev, ok := store.(registry.Revocations); ok {
			p.Revocations = rev
		} else {
			log.Warn("the registry store keeps no token deny list; revoked tokens stay valid until they expire")
		}
	}
	rate, burst := sec.HelloRate, sec.HelloBurst
	if rate == 0 {
		rate = 20
	}
	if burst == 0 {
		burst = 40
	}
	var exempt []netip.Prefix
	if !sec.RateLimitLoopback {
		exempt = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	p.Limiter = access.NewLimiter(rate, burst, exempt)
	out.policy = p

	switch {
	case !sec.TLS():
		log.Warn("TLS is off: gRPC is plaintext (dev mode; see docs/SECURITY.md)", "listen", c.Listen, "insecure", sec.Insecure)
	}
	if sec.Dev() {
		log.Warn("authentication is off: anyone who reaches this server may connect as any device and call every API (dev mode)")
	} else if sec.APIKeys.Len() > 0 && len(sec.ClusterSecret) == 0 && sec.ClientCA == "" {
		log.Warn("API keys are set but no --cluster-secret-file: PeerService is closed, so commands for devices held by other replicas fail")
	}
	return out, nil
}

// knownPeer accepts the listed names and the live nodes of the registry
// (remembered for a few seconds, so that a burst of forwards costs one
// registry read).
func knownPeer(store registry.Nodes, listed []string) func(context.Context, string) (bool, error) {
	var mu sync.Mutex
	live := map[string]time.Time{}
	return func(ctx context.Context, node string) (bool, error) {
		if slices.Contains(listed, node) {
			return true, nil
		}
		mu.Lock()
		until, ok := live[node]
		mu.Unlock()
		if ok && time.Now().Before(until) {
			return true, nil
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := store.NodeAddr(ctx, node)
		switch {
		case errors.Is(err, registry.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		}
		mu.Lock()
		if len(live) > 1024 {
			clear(live)
		}
		live[node] = time.Now().Add(5 * time.Second)
		mu.Unlock()
		return true, nil
	}
}

// peerDialOptions are the options replicas use to reach each other.
func (s *security) peerDialOptions(sec Security, node string) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if s.tls == nil {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		var roots *x509.CertPool
		for _, f := range []string{sec.PeerCA, sec.ClientCA} {
			if f != "" {
				pool, err := access.LoadPool(f)
				if err != nil {
					return nil, fmt.Errorf("peer CA: %w", err)
				}
				roots = pool
				break
			}
		}
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    roots,
			// Present this replica's certificate: with a tether://peer/
			// URI SAN it authenticates the call on its own.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return s.tls.Certificate(), nil
			},
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if len(sec.ClusterSecret) > 0 {
		opts = append(opts, grpc.WithUnaryInterceptor(access.PeerInterceptor(sec.ClusterSecret, node)))
	}
	return opts, nil
}

// selfDialOption is how the in-process gateway reaches this server.
func (s *security) selfDialOption() grpc.DialOption {
	if s.tls == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(s.tls.PinnedClientConfig()))
}

// httpTLS is the TLS config of the --http listener (no client certificates).
func (s *security) httpTLS() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.tls.Certificate(), nil
		},
	}
}
