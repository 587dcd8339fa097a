package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherhq/tether/api/deviceid"
)

// Certificate lifetimes. The CA outlives every certificate it signs; leaf
// certificates are short enough that a lost key does not stay useful for
// long, long enough that rotating them is a yearly chore, not a weekly one.
const (
	caLifetime     = 10 * 365 * 24 * time.Hour
	serverLifetime = 398 * 24 * time.Hour // the CA/Browser Forum maximum, also fine for private PKI
	deviceLifetime = 2 * 365 * 24 * time.Hour
	// backdate covers clocks that lag the issuing host's.
	backdate = 5 * time.Minute
)

const tlsUsage = `Usage:
  tether-server tls ca [--dir .] [--name "Tether CA"] [--days 3650]
      writes ca.pem and ca-key.pem (the key 0600): the CA for --client-ca and the agents' --ca
  tether-server tls server --dns NAME[,NAME] --ip IP[,IP] [--node NODE] [--dir .] [--days 398]
      writes server.pem and server-key.pem, signed by ca.pem/ca-key.pem: a server certificate
      (serverAuth) that is also the replica's peer certificate (clientAuth, URI tether://peer/NODE)
  tether-server tls device <device-id> [--dir .] [--days 730]
      writes <device-id>.pem and <device-id>-key.pem: a device client certificate
      (clientAuth, URI SAN tether://device/<device-id>, CN = the id)

Keys are ECDSA P-256; existing files are never overwritten. --ca and --ca-key
name the CA files when they are not ca.pem and ca-key.pem in --dir.
`

func tlsCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tlsUsage)
		return errors.New("tls: want ca, server or device")
	}
	fs := flag.NewFlagSet("tether-server tls "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), tlsUsage); fs.PrintDefaults() }
	dir := fs.String("dir", ".", "directory the files are written to (and the CA is read from)")
	now := time.Now()
	switch args[0] {
	case "ca":
		name := fs.String("name", "Tether CA", "the CA's common name")
		days := fs.Int("days", int(caLifetime/(24*time.Hour)), "validity in days")
		pos, err := parseWithArgs(fs, args[1:])
		if err != nil {
			return ignoreHelp(err)
		}
		if len(pos) != 0 {
			return fmt.Errorf("tls ca: unexpected arguments %q", pos)
		}
		if *days <= 0 {
			return fmt.Errorf("tls ca: --days %d: want a positive number", *days)
		}
		certFile, keyFile := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
		if err := refuseExisting(certFile, keyFile); err != nil {
			return err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			Subject:               pkix.Name{CommonName: *name},
			NotBefore:             now.Add(-backdate),
			NotAfter:              now.Add(time.Duration(*days) * 24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			MaxPathLenZero:        true,
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		}
		if err := writeCert(tmpl, nil, key, key, certFile, keyFile); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s and %s (keep the key offline; it signs every server and device certificate)\n", certFile, keyFile)
		return nil
	case "server", "device":
		caFile := fs.String("ca", "", "CA certificate (default ca.pem in --dir)")
		caKeyFile := fs.String("ca-key", "", "CA key (default ca-key.pem in --dir)")
		var dnsNames, ips, node *string
		def := serverLifetime
		if args[0] == "server" {
			dnsNames = fs.String("dns", "", "comma-separated DNS names agents and peers dial (e.g. tether.example.com,localhost)")
			ips = fs.String("ip", "", "comma-separated IP addresses agents and peers dial (e.g. 10.0.0.5,127.0.0.1)")
			node = fs.String("node", "", "node name of this replica (--node): adds URI SAN tether://peer/<node> so the certificate also authenticates it to other replicas")
		} else {
			def = deviceLifetime
		}
		days := fs.Int("days", int(def/(24*time.Hour)), "validity in days")
		pos, err := parseWithArgs(fs, args[1:])
		if err != nil {
			return ignoreHelp(err)
		}
		if *days <= 0 {
			return fmt.Errorf("tls %s: --days %d: want a positive number", args[0], *days)
		}
		if *caFile == "" {
			*caFile = filepath.Join(*dir, "ca.pem")
		}
		if *caKeyFile == "" {
			*caKeyFile = filepath.Join(*dir, "ca-key.pem")
		}
		ca, caKey, err := loadCA(*caFile, *caKeyFile)
		if err != nil {
			return err
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			NotBefore: now.Add(-backdate),
			NotAfter:  now.Add(time.Duration(*days) * 24 * time.Hour),
			KeyUsage:  x509.KeyUsageDigitalSignature,
		}
		if tmpl.NotAfter.After(ca.NotAfter) {
			tmpl.NotAfter = ca.NotAfter
		}
		var base string
		if args[0] == "server" {
			if len(pos) != 0 {
				return fmt.Errorf("tls server: unexpected arguments %q (names go in --dns and --ip)", pos)
			}
			for _, n := range splitList(*dnsNames) {
				if net.ParseIP(n) != nil {
					return fmt.Errorf("tls server: --dns %q is an IP address: give it with --ip", n)
				}
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
			for _, s := range splitList(*ips) {
				ip := net.ParseIP(s)
				if ip == nil {
					return fmt.Errorf("tls server: --ip %q is not an IP address", s)
				}
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
			if len(tmpl.DNSNames)+len(tmpl.IPAddresses) == 0 {
				return errors.New("tls server: give the names agents dial with --dns and/or --ip (a certificate without them verifies for no one)")
			}
			tmpl.Subject.CommonName = firstName(tmpl)
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
			if *node != "" {
				if err := deviceid.Validate(*node); err != nil {
					return fmt.Errorf("tls server: --node: %w", err)
				}
				tmpl.URIs = []*url.URL{{Scheme: "tether", Host: "peer", Path: "/" + *node}}
			}
			base = "server"
		} else {
			if len(pos) != 1 {
				return errors.New("tls device: want exactly one device id")
			}
			id := pos[0]
			if err := deviceid.Validate(id); err != nil {
				return fmt.Errorf("tls device: %w", err)
			}
			tmpl.Subject.CommonName = id
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			tmpl.URIs = []*url.URL{{Scheme: "tether", Host: "device", Path: "/" + id}}
			base = id
		}
		certFile, keyFile := filepath.Join(*dir, base+".pem"), filepath.Join(*dir, base+"-key.pem")
		if err := refuseExisting(certFile, keyFile); err != nil {
			return err
		}
		if err := writeCert(tmpl, ca, key, caKey, certFile, keyFile); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s and %s (valid until %s)\n", certFile, keyFile, tmpl.NotAfter.UTC().Format(time.DateOnly))
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, tlsUsage)
		return nil
	}
	fmt.Fprint(stderr, tlsUsage)
	return fmt.Errorf("tls: unknown command %q: want ca, server or device", args[0])
}

func firstName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.IPAddresses[0].String()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func refuseExisting(files ...string) error {
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			return fmt.Errorf("%s exists: refusing to overwrite it (move it away to issue a new one)", f)
		}
	}
	return nil
}

// writeCert signs tmpl with parent/signer (self-signed when parent is nil)
// and writes the certificate (0644) and key (0600, PKCS#8).
func writeCert(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey, certFile, keyFile string) error {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	ski := sha256.Sum256(pub)
	tmpl.SubjectKeyId = ski[:20]
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return fmt.Errorf("signing the certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

// writeNew creates path with perm (never widening an existing file: it
// refuses to overwrite one).
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w (create one with: tether-server tls ca)", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("%s: no PEM CERTIFICATE block", certFile)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, fmt.Errorf("%s: no PEM block", keyFile)
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: want an ECDSA key (tether-server tls ca makes one)", keyFile)
	}
	if !ec.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", keyFile, certFile)
	}
	return cert, ec, nil
}
