package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
)

// TLSOptions choose the agent's transport security.
type TLSOptions struct {
	// CA is a PEM bundle that verifies the server's certificate (empty: the
	// system roots).
	CA string
	// Cert and Key are the device's client certificate and key for mutual
	// TLS (both or neither).
	Cert, Key string
	// ServerName overrides the name checked in the server certificate
	// (default: the host of the server address).
	ServerName string
}

// TLSCredentials builds client TLS credentials from files. The client
// certificate is re-read at every handshake, so a renewed certificate is
// used from the next reconnect on.
func TLSCredentials(o TLSOptions) (credentials.TransportCredentials, error) {
	if (o.Cert == "") != (o.Key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName}
	if o.CA != "" {
		b, err := os.ReadFile(o.CA)
		if err != nil {
			return nil, fmt.Errorf("server CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("server CA %s: no PEM certificates", o.CA)
		}
		cfg.RootCAs = pool
	}
	if o.Cert != "" {
		if _, err := tls.LoadX509KeyPair(o.Cert, o.Key); err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(o.Cert, o.Key)
			if err != nil {
				return nil, fmt.Errorf("client certificate: %w", err)
			}
			return &c, nil
		}
	}
	return credentials.NewTLS(cfg), nil
}

// TokenCredentials send a device token as "authorization: Bearer <token>"
// on the Connect stream, read from a file at every connection attempt (so a
// replaced token is used from the next reconnect on). secure must be true
// on TLS connections; false lets the token travel in plaintext (dev mode).
func TokenCredentials(path string, secure bool) (credentials.PerRPCCredentials, error) {
	t := tokenFile{path: path, secure: secure}
	if _, err := t.read(); err != nil {
		return nil, err
	}
	return t, nil
}

type tokenFile struct {
	path   string
	secure bool
}

func (t tokenFile) read() (string, error) {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return "", fmt.Errorf("device token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("device token %s: want one token (tether-server token issue)", t.path)
	}
	return tok, nil
}

func (t tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := t.read()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

func (t tokenFile) RequireTransportSecurity() bool { return t.secure }
