package access

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/tetherhq/tether/api/deviceid"
)

// URI SANs that name a Tether identity in a client certificate.
const (
	DeviceURIPrefix = "tether://device/"
	PeerURIPrefix   = "tether://peer/"
)

// TLSFiles are the server's PEM files. ClientCA is optional.
type TLSFiles struct {
	Cert, Key, ClientCA string
}

// ServerTLS serves the certificate and client CA from files, re-reading them
// when their modification time changes (checked at most every
// reloadEvery), so rotating a certificate is: replace the files. A reload
// that fails keeps the previous files and is logged.
type ServerTLS struct {
	files TLSFiles
	log   *slog.Logger

	mu     sync.Mutex // guards the following
	cert   *tls.Certificate
	pool   *x509.CertPool
	mtimes [3]time.Time
	next   time.Time
}

const reloadEvery = 5 * time.Second

// NewServerTLS loads the files once (errors are fatal here, unlike on
// reload).
func NewServerTLS(files TLSFiles, log *slog.Logger) (*ServerTLS, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &ServerTLS{files: files, log: log}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func mtime(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

func (s *ServerTLS) load() error {
	m := [3]time.Time{mtime(s.files.Cert), mtime(s.files.Key), mtime(s.files.ClientCA)}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("TLS certificate: %w", err)
	}
	var pool *x509.CertPool
	if s.files.ClientCA != "" {
		pool, err = LoadPool(s.files.ClientCA)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
	}
	s.cert, s.pool, s.mtimes = &cert, pool, m
	return nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no PEM certificates", path)
	}
	return pool, nil
}

func (s *ServerTLS) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now(); now.After(s.next) {
		s.next = now.Add(reloadEvery)
		m := [3]time.Time{mtime(s.files.Cert), mtime(s.files.Key), mtime(s.files.ClientCA)}
		if m != s.mtimes {
			if err := s.load(); err != nil {
				s.log.Error("TLS files changed but cannot be loaded; keeping the previous ones", "err", err)
				s.mtimes = m
			} else {
				s.log.Info("TLS files reloaded", "cert", s.files.Cert, "client_ca", s.files.ClientCA)
			}
		}
	}
	return s.cert, s.pool
}

// Certificate is the current server certificate.
func (s *ServerTLS) Certificate() *tls.Certificate {
	c, _ := s.current()
	return c
}

// MutualTLS reports whether client certificates are verified.
func (s *ServerTLS) MutualTLS() bool { return s.files.ClientCA != "" }

// Config is the server's tls.Config. With a client CA, a client certificate
// is verified when one is given (VerifyClientCertIfGiven): devices may use a
// token instead, and API clients a key.
func (s *ServerTLS) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{"h2"},
			}
			if pool != nil {
				c.ClientCAs = pool
				c.ClientAuth = tls.VerifyClientCertIfGiven
			}
			return c, nil
		},
	}
}

// PinnedClientConfig is a client tls.Config that accepts exactly this
// server's current certificate (the in-process gateway's connection to its
// own server needs no CA).
func (s *ServerTLS) PinnedClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			cert := s.Certificate()
			if len(raw) == 0 || len(cert.Certificate) == 0 || string(raw[0]) != string(cert.Certificate[0]) {
				return errors.New("not this server's certificate")
			}
			return nil
		},
	}
}

// TLSInfoFrom finds the TLS state in a connection's AuthInfo, looking
// through wrappers that expose Unwrap() credentials.AuthInfo (the server's
// connection tracking does).
func TLSInfoFrom(ai credentials.AuthInfo) (credentials.TLSInfo, bool) {
	for i := 0; ai != nil && i < 4; i++ {
		switch v := ai.(type) {
		case credentials.TLSInfo:
			return v, true
		case *credentials.TLSInfo:
			return *v, true
		case interface{ Unwrap() credentials.AuthInfo }:
			ai = v.Unwrap()
		default:
			return credentials.TLSInfo{}, false
		}
	}
	return credentials.TLSInfo{}, false
}

// VerifiedLeaf is the client certificate of a connection, only if the TLS
// handshake verified it against the client CA.
func VerifiedLeaf(ai credentials.AuthInfo) (*x509.Certificate, bool) {
	info, ok := TLSInfoFrom(ai)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return info.State.VerifiedChains[0][0], true
}

// DeviceIDFromCert is the device a client certificate names: the URI SAN
// tether://device/<id>, or failing that, only when cn is true
// (--cert-cn-device), the subject CN. A peer certificate (tether://peer/...)
// names no device.
func DeviceIDFromCert(c *x509.Certificate, cn bool) (string, bool) {
	if _, ok := PeerNameFromCert(c); ok {
		return "", false
	}
	for _, u := range c.URIs {
		if id, ok := strings.CutPrefix(uriString(u), DeviceURIPrefix); ok {
			return id, deviceid.Validate(id) == nil
		}
	}
	if !cn {
		return "", false
	}
	name := c.Subject.CommonName
	return name, name != "" && deviceid.Validate(name) == nil
}

// PeerNameFromCert is the replica a client certificate names with the URI
// SAN tether://peer/<node>.
func PeerNameFromCert(c *x509.Certificate) (string, bool) {
	for _, u := range c.URIs {
		if n, ok := strings.CutPrefix(uriString(u), PeerURIPrefix); ok && n != "" {
			return n, true
		}
	}
	return "", false
}

func uriString(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.String()
}
