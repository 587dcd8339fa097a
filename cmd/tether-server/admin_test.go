package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenIssueRefusesANonPositiveTTL(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "token.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("s", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []string{"0", "-1h"} {
		var out, errOut bytes.Buffer
		err := tokenCommand([]string{"issue", "dev-1", "--ttl", ttl, "--token-secret-file", secret}, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), "must be positive") || out.Len() != 0 {
			t.Errorf("token issue --ttl %s: %v, printed %q; want a refusal and no token", ttl, err, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if err := tokenCommand([]string{"issue", "dev-1", "--ttl", "1h", "--token-secret-file", secret}, &out, &errOut); err != nil || out.Len() == 0 {
		t.Fatalf("token issue --ttl 1h: %v", err)
	}
}
