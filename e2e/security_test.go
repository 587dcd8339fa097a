package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherhq/tether/internal/testredis"
)

// pki makes a CA and certificates in the test (no private key is checked in).
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	n    int64
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{t: t, dir: t.TempDir(), cert: cert, key: key, n: 1}
	p.write("ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

func (p *pki) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// leaf issues a certificate: a server certificate for 127.0.0.1, or a client
// certificate with the given URI SAN.
func (p *pki) leaf(name, uri string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.n++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.n), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	return p.write(name+".pem", "CERTIFICATE", der), p.write(name+"-key.pem", "EC PRIVATE KEY", kder)
}

func (p *pki) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// runBin runs a binary to completion and returns stdout, stderr.
func runBin(t *testing.T, stdin string, bin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, bin), args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func getDeviceWith(c *http.Client, base, id, key string) (device, int, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/devices/"+id, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return device{}, 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var d struct {
		Device device `json:"device"`
	}
	if resp.StatusCode != 200 {
		return device{}, resp.StatusCode, fmt.Errorf("GET %s: %s %s", id, resp.Status, body)
	}
	return d.Device, 200, json.Unmarshal(body, &d)
}

// TestPlaintextOnANonLoopbackAddressRefusesToStart: dev mode binds
// loopback only; anything else needs TLS or an explicit --insecure.
func TestPlaintextOnANonLoopbackAddressRefusesToStart(t *testing.T) {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	_, stderr, err := runBin(t, "", "tether-server", "--listen", "0.0.0.0:"+port)
	if err == nil || !strings.Contains(stderr, "--insecure") {
		t.Fatalf("tether-server --listen 0.0.0.0:%s without TLS: err=%v stderr=%s; want a refusal naming --insecure", port, err, stderr)
	}
}

// TestTLSDeviceTokensCertificatesAndRevocation: real binaries over TLS; an
// agent with a token (and one with a client certificate) comes online; a
// token for one id cannot Hello as another; `token revoke` ends the live
// session with AUTH_REVOKED.
func TestTLSDeviceTokensCertificatesAndRevocation(t *testing.T) {
	p := newPKI(t)
	srvCert, srvKey := p.leaf("server", "", true)
	secretFile := writeFile(t, "token.secret", []byte("e2e-token-secret-0123456789abcdef0123456789\n"))
	rds := testredis.Start(t)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	srv := start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--redis", rds.URL(), "--node", "s1",
		"--tls-cert", srvCert, "--tls-key", srvKey, "--client-ca", p.caFile(), "--token-secret-file", secretFile)
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)
	base, hc := "https://"+httpAddr, p.httpClient()

	tok, stderr, err := runBin(t, "", "tether-server", "token", "issue", "tok-1", "--ttl", "1h", "--token-secret-file", secretFile)
	if err != nil {
		t.Fatalf("token issue: %v %s", err, stderr)
	}
	tokFile := writeFile(t, "tok-1.token", []byte(tok))
	start(t, "tether-agent", "--server", grpcAddr, "--ca", p.caFile(), "--token-file", tokFile, "--device-id", "tok-1", "--config", writeAgentConfig(t, ""))
	// The same token, claiming another id.
	start(t, "tether-agent", "--server", grpcAddr, "--ca", p.caFile(), "--token-file", tokFile, "--device-id", "tok-2", "--config", writeAgentConfig(t, ""))
	cert, key := p.leaf("mtls-1", "tether://device/mtls-1", false)
	start(t, "tether-agent", "--server", grpcAddr, "--ca", p.caFile(), "--tls-cert", cert, "--tls-key", key, "--device-id", "mtls-1", "--config", writeAgentConfig(t, ""))

	for _, id := range []string{"tok-1", "mtls-1"} {
		eventually(t, 20*time.Second, func() error {
			d, _, err := getDeviceWith(hc, base, id, "")
			if err == nil && !d.Online {
				err = fmt.Errorf("%s offline", id)
			}
			return err
		})
	}
	eventually(t, 20*time.Second, func() error {
		if !strings.Contains(srv.out.String(), "hello for another device refused") || !strings.Contains(srv.out.String(), "device=tok-2") {
			return fmt.Errorf("no refusal of tok-2 logged yet")
		}
		return nil
	})
	if _, code, _ := getDeviceWith(hc, base, "tok-2", ""); code != http.StatusNotFound {
		t.Fatalf("tok-2 (refused Hello) GET: %d; want 404 (never claimed)", code)
	}

	if _, stderr, err := runBin(t, "", "tether-server", "token", "revoke", strings.TrimSpace(tok), "--redis", rds.URL()); err != nil {
		t.Fatalf("token revoke: %v %s", err, stderr)
	}
	eventually(t, 10*time.Second, func() error {
		d, _, err := getDeviceWith(hc, base, "tok-1", "")
		if err != nil {
			return err
		}
		if d.Online || d.LastDisconnect == nil || d.LastDisconnect.Reason != "DISCONNECT_REASON_AUTH_REVOKED" {
			return fmt.Errorf("tok-1: online=%v last=%+v", d.Online, d.LastDisconnect)
		}
		return nil
	})
	if d, _, err := getDeviceWith(hc, base, "mtls-1", ""); err != nil || !d.Online {
		t.Fatalf("mtls-1 after the revocation of another token: %+v %v", d, err)
	}
}

// TestAPIKeysThroughTheGateway: without a key the JSON API answers 401, a
// viewer key 403 on :command, an operator key runs it.
func TestAPIKeysThroughTheGateway(t *testing.T) {
	keys := map[string]string{"viewer": "e2e-viewer-key-0123456789", "operator": "e2e-operator-key-0123456789"}
	var lines []string
	for role, k := range keys {
		out, stderr, err := runBin(t, k+"\n", "tether-server", "apikey", "hash", "--role", role, "--name", role)
		if err != nil {
			t.Fatalf("apikey hash: %v %s", err, stderr)
		}
		lines = append(lines, strings.TrimSpace(out))
	}
	keyFile := writeFile(t, "keys", []byte(strings.Join(lines, "\n")+"\n"))
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--http", httpAddr, "--api-keys-file", keyFile)
	waitListening(t, grpcAddr)
	waitListening(t, httpAddr)
	start(t, "tether-agent", "--server", grpcAddr, "--device-id", "key-1", "--config", writeAgentConfig(t, ""))
	base := "http://" + httpAddr
	eventually(t, 20*time.Second, func() error {
		d, _, err := getDeviceWith(http.DefaultClient, base, "key-1", keys["viewer"])
		if err == nil && !d.Online {
			err = fmt.Errorf("offline")
		}
		return err
	})
	for _, tc := range []struct {
		key  string
		want int
	}{{"", 401}, {"wrong-key-0123456789", 401}, {keys["viewer"], 403}, {keys["operator"], 200}} {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/devices/key-1:command", strings.NewReader(`{"name":"echo","args":["hi"]}`))
		req.Header.Set("Content-Type", "application/json")
		if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || (tc.want != 200 && !json.Valid(body)) {
			t.Errorf("POST :command with key %q: %d %s; want %d", tc.key, resp.StatusCode, body, tc.want)
		}
	}
}

// exitsWith runs tether-server or tether-gateway expecting it to refuse to
// start with an error containing want.
func exitsWith(t *testing.T, want string, bin string, args ...string) {
	t.Helper()
	_, stderr, err := runBin(t, "", bin, args...)
	if err == nil || !strings.Contains(stderr, want) {
		t.Errorf("%s %s: err=%v stderr=%s; want a refusal containing %q", bin, strings.Join(args, " "), err, stderr, want)
	}
}

// TestNoPlaintextOffLoopbackAnywhere: the gateway's --listen and both
// binaries' --metrics follow the server's loopback rule; the gateway
// serves HTTPS with --tls-cert/--tls-key, and every response says nosniff.
func TestNoPlaintextOffLoopbackAnywhere(t *testing.T) {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	exitsWith(t, "--insecure", "tether-gateway", "--listen", "0.0.0.0:"+port)
	exitsWith(t, "--metrics", "tether-gateway", "--metrics", "0.0.0.0:"+port)
	exitsWith(t, "--metrics", "tether-server", "--listen", freeAddr(t), "--metrics", "0.0.0.0:"+port)

	p := newPKI(t)
	srvCert, srvKey := p.leaf("server", "", true)
	grpcAddr, gwAddr := freeAddr(t), freeAddr(t)
	start(t, "tether-server", "--listen", grpcAddr, "--tls-cert", srvCert, "--tls-key", srvKey)
	waitListening(t, grpcAddr)
	start(t, "tether-gateway", "--listen", gwAddr, "--server", grpcAddr, "--server-ca", p.caFile(), "--tls-cert", srvCert, "--tls-key", srvKey)
	waitListening(t, gwAddr)
	hc := p.httpClient()
	eventually(t, 20*time.Second, func() error {
		resp, err := hc.Get("https://" + gwAddr + "/v1/devices")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			return fmt.Errorf("GET /v1/devices over HTTPS: %s %v", resp.Status, resp.Header)
		}
		return nil
	})
	if resp, err := http.Get("http://" + gwAddr + "/v1/devices"); err == nil && resp.StatusCode == 200 {
		resp.Body.Close()
		t.Fatal("the TLS gateway answered plaintext HTTP")
	}
}

// TestSecretFileHygiene: a group/world-writable secret file, or one file
// for two secrets, stops the server with a one-line fix.
func TestSecretFileHygiene(t *testing.T) {
	sec := writeFile(t, "token.secret", []byte("e2e-token-secret-0123456789abcdef0123456789\n"))
	other := writeFile(t, "cluster.secret", []byte("e2e-cluster-secret-0123456789abcdef0123456789\n"))
	keys := writeFile(t, "api-keys", []byte(""))
	if err := os.Chmod(sec, 0o666); err != nil {
		t.Fatal(err)
	}
	exitsWith(t, "chmod go-w "+sec, "tether-server", "--listen", freeAddr(t), "--token-secret-file", sec)
	if err := os.Chmod(keys, 0o620); err != nil {
		t.Fatal(err)
	}
	exitsWith(t, "chmod go-w "+keys, "tether-server", "--listen", freeAddr(t), "--api-keys-file", keys)
	if err := os.Chmod(sec, 0o600); err != nil {
		t.Fatal(err)
	}
	exitsWith(t, "--token-secret-file and --cluster-secret-file are the same file", "tether-server", "--listen", freeAddr(t), "--token-secret-file", sec, "--cluster-secret-file", sec)
	_ = other
}

// TestTheServerReadsItsSecretsAsTheUnitRunsIt: as tether-server.service
// does — a non-root uid (DynamicUser=yes), the secrets root-only in
// /etc/tether but handed over by LoadCredential= in $CREDENTIALS_DIRECTORY,
// the *_FILE settings bare names — the server reads every secret.
func TestTheServerReadsItsSecretsAsTheUnitRunsIt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the server as another uid")
	}
	const uid, gid = 65534, 65534 // nobody: stands in for the dynamic user
	// The binary must be reachable by that uid (the e2e bin dir is 0700).
	dir, err := os.MkdirTemp("", "tether-unit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(dir, 0o755))
	bin, err := os.ReadFile(filepath.Join(binDir, "tether-server"))
	must(err)
	must(os.WriteFile(filepath.Join(dir, "tether-server"), bin, 0o755))

	// What systemd makes of LoadCredential=: a directory only the service
	// user may read, one 0400 file per credential, owned by that user.
	creds := filepath.Join(dir, "credentials")
	must(os.Mkdir(creds, 0o500))
	keyLine, _, err := runBin(t, "e2e-viewer-key-0123456789\n", "tether-server", "apikey", "hash", "--role", "viewer", "--name", "viewer")
	must(err)
	for name, body := range map[string]string{
		"token.secret":   "e2e-token-secret-0123456789abcdef0123456789\n",
		"cluster.secret": "e2e-cluster-secret-0123456789abcdef012345678\n",
		"api-keys":       keyLine,
	} {
		p := filepath.Join(creds, name)
		must(os.WriteFile(p, []byte(body), 0o400))
		must(os.Chown(p, uid, gid))
	}
	must(os.Chown(creds, uid, gid))
	// The same files root-only elsewhere are what the unit could not read.
	rootOnly := filepath.Join(dir, "root-only.secret")
	must(os.WriteFile(rootOnly, []byte("e2e-token-secret-0123456789abcdef0123456789\n"), 0o400))

	run := func(env ...string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(filepath.Join(dir, "tether-server"))
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/"}, env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}, Setpgid: true}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		return cmd, out
	}
	cmd, out := run("TETHER_LISTEN="+freeAddr(t), "TETHER_TOKEN_SECRET_FILE="+rootOnly)
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "permission denied") {
		t.Fatalf("a root-only secret read as uid %d: err=%v out=%s; want permission denied", uid, err, out)
	}

	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	cmd, out = run("CREDENTIALS_DIRECTORY="+creds, "TETHER_LISTEN="+grpcAddr, "TETHER_HTTP="+httpAddr,
		"TETHER_TOKEN_SECRET_FILE=token.secret", "TETHER_CLUSTER_SECRET_FILE=cluster.secret", "TETHER_API_KEYS_FILE=api-keys", "TETHER_LOG_FORMAT=json")
	must(cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("server output:\n%s", out)
		}
	})
	waitListening(t, httpAddr)
	eventually(t, 10*time.Second, func() error {
		s := out.String()
		for _, want := range []string{`"device_tokens":true`, `"api_keys":1`, `"cluster_secret":true`} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("start line lacks %s", want)
			}
		}
		return nil
	})
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/v1/devices", nil)
	for key, want := range map[string]int{"": 401, "e2e-viewer-key-0123456789": 200} {
		req.Header.Del("Authorization")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		must(err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /v1/devices with key %q: %d, want %d", key, resp.StatusCode, want)
		}
	}
}

// TestForwardedCommandsAreAuditedOnBothReplicas: two replicas with a
// cluster secret; a command through the replica that does not hold the
// device is forwarded with a proof bound to both nodes, and each replica
// writes its audit line (the API key on one, the peer on the other).
func TestForwardedCommandsAreAuditedOnBothReplicas(t *testing.T) {
	keyLine, _, err := runBin(t, "e2e-operator-key-0123456789\n", "tether-server", "apikey", "hash", "--role", "operator", "--name", "ops")
	if err != nil {
		t.Fatal(err)
	}
	keys := writeFile(t, "api-keys", []byte(keyLine))
	secret := writeFile(t, "cluster.secret", []byte("e2e-cluster-secret-0123456789abcdef012345678\n"))
	rds := testredis.Start(t)
	g1, g2, h2 := freeAddr(t), freeAddr(t), freeAddr(t)
	common := []string{"--redis", rds.URL(), "--api-keys-file", keys, "--cluster-secret-file", secret, "--log-format", "json"}
	s1 := start(t, "tether-server", append([]string{"--listen", g1, "--node", "s1"}, common...)...)
	s2 := start(t, "tether-server", append([]string{"--listen", g2, "--http", h2, "--node", "s2"}, common...)...)
	waitListening(t, g1)
	waitListening(t, h2)
	start(t, "tether-agent", "--server", g1, "--device-id", "fwd-1", "--config", writeAgentConfig(t, ""))
	var body []byte
	eventually(t, 20*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodPost, "http://"+h2+"/v1/devices/fwd-1:command", strings.NewReader(`{"name":"echo","args":["hi"]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer e2e-operator-key-0123456789")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("POST :command via s2: %s %s", resp.Status, body)
		}
		return nil
	})
	if !strings.Contains(string(body), `"node":"s1"`) {
		t.Fatalf("command answered by %s; want s1 (forwarded)", body)
	}
	auditLine := func(p *proc, action, caller string) error {
		for _, l := range strings.Split(p.out.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "audit" && m["action"] == action && m["caller"] == caller &&
				m["device"] == "fwd-1" && m["command"] == "echo" && m["code"] == "OK" {
				return nil
			}
		}
		return fmt.Errorf("no audit line action=%s caller=%s", action, caller)
	}
	eventually(t, 5*time.Second, func() error {
		if err := auditLine(s2, "send_command", "key:ops"); err != nil {
			return err
		}
		return auditLine(s1, "forward_command", "peer:s2")
	})
}
