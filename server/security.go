package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tetherhq/tether/server/access"
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
	// authenticate with one (URI SAN tether://device/<id>, else the CN), a
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
	if sec.TLS() || sec.Insecure {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--http", c.HTTP}} {
		if a.addr == "" || (a.flag == "--listen" && c.Listener != nil) {
			continue
		}
		if !isLoopback(a.addr) {
			return fmt.Errorf("refusing to serve plaintext on %s %s, which is not a loopback address: "+
				"give --tls-cert and --tls-key, or --insecure to accept plaintext on a trusted network (see docs/SECURITY.md)", a.flag, a.addr)
		}
	}
	return nil
}

func (c *Config) buildSecurity(store registry.Store, log *slog.Logger) (*security, error) {
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
	p := &access.Policy{APIKeys: sec.APIKeys, ClusterSecret: sec.ClusterSecret, MutualTLS: sec.ClientCA != "", Logger: log}
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

// peerDialOptions are the options replicas use to reach each other.
func (s *security) peerDialOptions(sec Security) ([]grpc.DialOption, error) {
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
		opts = append(opts, grpc.WithPerRPCCredentials(access.PeerCredentials(sec.ClusterSecret, s.tls != nil)))
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
