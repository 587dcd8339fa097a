package access

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CredentialsDirEnv is where systemd puts the credentials of a unit's
// LoadCredential= lines.
const CredentialsDirEnv = "CREDENTIALS_DIRECTORY"

// ResolveSecretPath maps a secret-file flag's value to a path: a bare name
// (no '/') is looked up in $CREDENTIALS_DIRECTORY when that is set and the
// file exists there (systemd LoadCredential=name:/etc/tether/name); any
// other value is a path as given.
func ResolveSecretPath(path string) string {
	dir := os.Getenv(CredentialsDirEnv)
	if path == "" || dir == "" || strings.ContainsRune(path, '/') {
		return path
	}
	p := filepath.Join(dir, path)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return path
}

// CheckSecretFile refuses a secret file that others could replace: one that
// is group- or world-writable. The error says how to fix it in one line.
// warning is non-empty for a world-readable file (allowed, but everyone on
// the host can read the secret).
func CheckSecretFile(path, what string) (warning string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s %s is not a regular file", what, path)
	}
	mode := st.Mode().Perm()
	if mode&0o022 != 0 {
		return "", fmt.Errorf("%s %s is group/world-writable (mode %04o), so anyone could replace it: run chmod go-w %s (0600, or 0640 for the service's group; or use systemd LoadCredential=)", what, path, mode, path)
	}
	if mode&0o004 != 0 {
		return fmt.Sprintf("%s %s is world-readable (mode %04o): run chmod o-r %s", what, path, mode, path), nil
	}
	return "", nil
}

// SecretFile is one secret-file flag, for CheckDistinctSecrets.
type SecretFile struct {
	What, Path string
}

// CheckDistinctSecrets refuses one file used for two different secrets
// (e.g. the token secret and the cluster secret: whoever may read one could
// then forge the other).
func CheckDistinctSecrets(files ...SecretFile) error {
	var seen []SecretFile
	var infos []os.FileInfo
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		st, err := os.Stat(f.Path)
		if err != nil {
			continue // reported when the file is read
		}
		for i, s := range seen {
			if os.SameFile(infos[i], st) {
				return fmt.Errorf("%s and %s are the same file (%s): give each secret its own file (e.g. head -c 32 /dev/urandom | base64 > %s)", s.What, f.What, f.Path, filepath.Base(f.Path)+".new")
			}
		}
		seen, infos = append(seen, f), append(infos, st)
	}
	return nil
}
