package e2e

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sectionBlocks returns the ```sh blocks of the markdown section that
// starts with heading, each as its lines.
func sectionBlocks(t *testing.T, path, heading string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks [][]string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !inBlock && strings.HasPrefix(line, "## "):
			inSection = line == heading
		case !inSection:
		case strings.HasPrefix(line, "```sh"):
			inBlock = true
			blocks = append(blocks, nil)
		case strings.HasPrefix(line, "```"):
			inBlock = false
		case inBlock && strings.TrimSpace(line) != "":
			blocks[len(blocks)-1] = append(blocks[len(blocks)-1], line)
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("%s has no sh blocks under %q", path, heading)
	}
	return blocks
}

// runIn runs one shell line in dir with the binaries on PATH.
func runIn(t *testing.T, dir, line string) string {
	t.Helper()
	cmd := exec.Command("bash", "-c", "set -euo pipefail; "+line)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s\n  failed: %v\n%s", line, err, out)
	}
	return string(out)
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkPKI verifies the certificates in dir the way the server and agents
// will: the server's for 127.0.0.1 and localhost with serverAuth, its peer
// URI, and the device's URI SAN with clientAuth only.
func checkPKI(t *testing.T, dir string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, filepath.Join(dir, "ca.pem")))
	srv := readCert(t, filepath.Join(dir, "server.pem"))
	for _, name := range []string{"127.0.0.1", "localhost"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("server certificate as a peer client certificate: %v", err)
	}
	if len(srv.URIs) != 1 || srv.URIs[0].String() != "tether://peer/replica-1" {
		t.Errorf("server URIs = %v", srv.URIs)
	}
	dev := readCert(t, filepath.Join(dir, "kiosk-7.pem"))
	if _, err := dev.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device certificate: %v", err)
	}
	if _, err := dev.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the device certificate verifies as a server certificate")
	}
	if len(dev.URIs) != 1 || dev.URIs[0].String() != "tether://device/kiosk-7" || dev.Subject.CommonName != "kiosk-7" {
		t.Errorf("device URIs = %v, CN = %q", dev.URIs, dev.Subject.CommonName)
	}
	for _, key := range []string{"ca-key.pem", "server-key.pem", "kiosk-7-key.pem"} {
		st, err := os.Stat(filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", key, st.Mode().Perm())
		}
	}
}

// TestTheCertificateRecipeBringsUpTLSMTLSTokensAndAPIKeys runs the
// Certificates section of docs/SECURITY.md as written: the tls commands, the
// secrets, the server and both agents, and the curl with the API key.
func TestTheCertificateRecipeBringsUpTLSMTLSTokensAndAPIKeys(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:7443", "127.0.0.1:8443"} {
		if c, err := netDial(addr); err == nil {
			c.Close()
			t.Fatalf("%s is already in use; the SECURITY.md recipe needs it free", addr)
		}
	}
	blocks := sectionBlocks(t, "../docs/SECURITY.md", "## Certificates")
	if len(blocks) != 5 {
		t.Fatalf("want 5 sh blocks (tls, secrets, daemons, curl, openssl), found %d", len(blocks))
	}
	dir := t.TempDir()
	for _, line := range append(blocks[0], blocks[1]...) {
		runIn(t, dir, line)
	}
	checkPKI(t, dir)
	// Refuses to overwrite.
	cmd := exec.Command(filepath.Join(binDir, "tether-server"), "tls", "ca")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "refusing to overwrite") {
		t.Errorf("a second tls ca: %v %s", err, out)
	}

	for _, line := range blocks[2] {
		f := strings.Fields(line)
		startIn(t, dir, f[0], f[1:]...)
		if f[0] == "tether-server" {
			waitListening(t, "127.0.0.1:7443")
			waitListening(t, "127.0.0.1:8443")
		}
	}
	if len(blocks[3]) != 1 {
		t.Fatalf("want one curl line, got %q", blocks[3])
	}
	eventually(t, 30*time.Second, func() error {
		var got struct {
			Devices []struct {
				DeviceID string `json:"deviceId"`
				Online   bool   `json:"online"`
			} `json:"devices"`
		}
		out := runIn(t, dir, blocks[3][0])
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		online := map[string]bool{}
		for _, d := range got.Devices {
			online[d.DeviceID] = d.Online
		}
		if !online["kiosk-7"] || !online["kiosk-8"] {
			return fmt.Errorf("want kiosk-7 (mTLS) and kiosk-8 (token) online: %s", out)
		}
		return nil
	})
	// Without the key: 401.
	out := runIn(t, dir, `curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem https://127.0.0.1:8443/v1/devices`)
	if out != "401" {
		t.Errorf("without a key: HTTP %s, want 401", out)
	}
}

// TestTheOpenSSLRecipeMakesEquivalentCertificates runs the openssl block of
// the Certificates section and checks the result like tether-server's.
func TestTheOpenSSLRecipeMakesEquivalentCertificates(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	blocks := sectionBlocks(t, "../docs/SECURITY.md", "## Certificates")
	dir := t.TempDir()
	runIn(t, dir, strings.Join(blocks[len(blocks)-1], "\n"))
	checkPKI(t, dir)
}
