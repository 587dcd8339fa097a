package access

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeSecret(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Repeat("k", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWritableSecretFilesAreRefusedWithTheFix(t *testing.T) {
	dir := t.TempDir()
	for _, mode := range []os.FileMode{0o666, 0o620, 0o602} {
		p := writeSecret(t, dir, "s", mode)
		_, err := LoadSecret(p, "token secret")
		if err == nil || !strings.Contains(err.Error(), "chmod go-w "+p) {
			t.Errorf("mode %04o: %v; want a refusal saying chmod go-w", mode, err)
		}
		if _, err := LoadAPIKeys(p); err == nil || !strings.Contains(err.Error(), "chmod go-w") {
			t.Errorf("API keys file mode %04o: %v; want a refusal", mode, err)
		}
	}
	p := writeSecret(t, dir, "s", 0o644)
	if w, err := CheckSecretFile(p, "token secret"); err != nil || !strings.Contains(w, "chmod o-r "+p) {
		t.Errorf("world-readable: %q, %v; want a warning saying chmod o-r", w, err)
	}
	if _, err := LoadSecret(p, "token secret"); err != nil {
		t.Errorf("world-readable is allowed (with a warning): %v", err)
	}
	p = writeSecret(t, dir, "s", 0o400)
	if w, err := CheckSecretFile(p, "token secret"); err != nil || w != "" {
		t.Errorf("0400: %q, %v", w, err)
	}
}

func TestOneFileForTwoSecretsIsRefused(t *testing.T) {
	dir := t.TempDir()
	a := writeSecret(t, dir, "a", 0o600)
	b := writeSecret(t, dir, "b", 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	if err := CheckDistinctSecrets(SecretFile{"--token-secret-file", a}, SecretFile{"--cluster-secret-file", b}); err != nil {
		t.Fatal(err)
	}
	err := CheckDistinctSecrets(SecretFile{"--token-secret-file", a}, SecretFile{"--api-keys-file", ""}, SecretFile{"--cluster-secret-file", link})
	if err == nil || !strings.Contains(err.Error(), "--token-secret-file and --cluster-secret-file are the same file") {
		t.Fatalf("same file through a symlink: %v", err)
	}
}

func TestABareNameIsReadFromTheCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	writeSecret(t, dir, "token.secret", 0o400)
	t.Setenv(CredentialsDirEnv, dir)
	if got := ResolveSecretPath("token.secret"); got != filepath.Join(dir, "token.secret") {
		t.Fatalf("ResolveSecretPath = %q", got)
	}
	if _, err := LoadSecret("token.secret", "token secret"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"./token.secret", "/etc/tether/token.secret", "missing.secret"} {
		if got := ResolveSecretPath(p); got != p {
			t.Errorf("ResolveSecretPath(%q) = %q; want it unchanged", p, got)
		}
	}
}
