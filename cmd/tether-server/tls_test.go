package main

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) error { return tlsCommand(append(args, "--dir", dir), io.Discard, io.Discard) }
	if err := run("server", "--dns", "localhost"); err == nil || !strings.Contains(err.Error(), "tether-server tls ca") {
		t.Errorf("server before ca: %v", err)
	}
	if err := run("ca"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server"}, "give the names agents dial with --dns and/or --ip"},
		{[]string{"server", "--ip", "nope"}, `--ip "nope" is not an IP address`},
		{[]string{"server", "--dns", "10.0.0.1"}, "is an IP address: give it with --ip"},
		{[]string{"server", "--dns", "x", "--node", "a b"}, "--node"},
		{[]string{"device"}, "want exactly one device id"},
		{[]string{"device", "bad id!"}, "tls device"},
		{[]string{"device", "k1", "--days", "0"}, "--days 0: want a positive number"},
		{[]string{"bogus"}, `unknown command "bogus"`},
	} {
		if err := run(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := run("device", "k1", "--days", "99999"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "k1.pem"))
	blk, _ := pem.Decode(b)
	dev, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "ca.pem"))
	blk, _ = pem.Decode(b)
	ca, _ := x509.ParseCertificate(blk.Bytes)
	if dev.NotAfter.After(ca.NotAfter) {
		t.Errorf("the device certificate (%v) outlives the CA (%v)", dev.NotAfter, ca.NotAfter)
	}
	if err := run("device", "k1"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("re-issue over existing files: %v", err)
	}
}
