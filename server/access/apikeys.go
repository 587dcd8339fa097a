package access

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Role is what an API key may do. Each role includes the ones below it.
type Role int

// Roles, weakest first.
const (
	RoleNone Role = iota
	// RoleViewer reads: ListDevices, GetDevice, WatchDevices,
	// GetDeviceHistory, GetInventory, ListNodes.
	RoleViewer
	// RoleOperator also acts on devices: SendCommand, DisconnectDevice,
	// PreRegisterDevice.
	RoleOperator
	// RoleAdmin also administers: DeleteDevice, reflection, token admin.
	RoleAdmin
)

func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleOperator:
		return "operator"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole parses viewer, operator or admin.
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "viewer":
		return RoleViewer, nil
	case "operator":
		return RoleOperator, nil
	case "admin":
		return RoleAdmin, nil
	}
	return RoleNone, fmt.Errorf("role %q: want viewer, operator or admin", s)
}

// APIKey is one configured key: only its SHA-256 is kept.
type APIKey struct {
	Hash [sha256.Size]byte
	Role Role
	Name string
}

// APIKeys is the set of configured keys.
type APIKeys struct {
	keys []APIKey
}

// Len is the number of keys.
func (k *APIKeys) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Lookup finds the key whose hash matches key's. Every configured hash is
// compared in constant time.
func (k *APIKeys) Lookup(key string) (APIKey, bool) {
	if k == nil || key == "" {
		return APIKey{}, false
	}
	h := sha256.Sum256([]byte(key))
	var found APIKey
	ok := false
	for _, c := range k.keys {
		if subtle.ConstantTimeCompare(h[:], c.Hash[:]) == 1 {
			found, ok = c, true
		}
	}
	return found, ok
}

// HashLine is the key-file line for key: "sha256:<hex> <role> <name>".
func HashLine(key string, role Role, name string) string {
	h := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(h[:]) + " " + role.String() + " " + name
}

// LoadAPIKeys reads a key file (see ParseAPIKeys).
func LoadAPIKeys(path string) (*APIKeys, error) {
	path = ResolveSecretPath(path)
	if _, err := CheckSecretFile(path, "API keys file"); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	k, err := ParseAPIKeys(b)
	if err != nil {
		return nil, fmt.Errorf("api keys %s: %w", path, err)
	}
	return k, nil
}

// ParseAPIKeys parses keys in either format:
//
//	# line format: one key a line (also ';'-separated, for TETHER_API_KEYS)
//	sha256:<64 hex> <role> <name>
//
//	# YAML
//	keys:
//	  - {sha256: <64 hex>, role: operator, name: ci}
//
// Blank lines and # comments are ignored. Plain keys are refused: hash them
// with `tether-server apikey hash`.
func ParseAPIKeys(data []byte) (*APIKeys, error) {
	trimmed := bytes.TrimSpace(stripComments(data))
	if bytes.HasPrefix(trimmed, []byte("keys:")) {
		return parseYAMLKeys(data)
	}
	out := &APIKeys{}
	sc := bufio.NewScanner(bytes.NewReader(bytes.ReplaceAll(data, []byte(";"), []byte("\n"))))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("entry %d: want \"sha256:<hex> <role> <name>\"", n)
		}
		name := strings.Join(f[2:], " ")
		if err := out.add(f[0], f[1], name); err != nil {
			return nil, fmt.Errorf("entry %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out.keys) == 0 {
		return nil, errors.New("no keys")
	}
	return out, nil
}

func stripComments(data []byte) []byte {
	var b bytes.Buffer
	for _, l := range bytes.Split(data, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			b.Write(l)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

func parseYAMLKeys(data []byte) (*APIKeys, error) {
	var doc struct {
		Keys []struct {
			SHA256 string `yaml:"sha256"`
			Role   string `yaml:"role"`
			Name   string `yaml:"name"`
		} `yaml:"keys"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	out := &APIKeys{}
	for i, k := range doc.Keys {
		h := k.SHA256
		if !strings.HasPrefix(h, "sha256:") {
			h = "sha256:" + h
		}
		if err := out.add(h, k.Role, k.Name); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
	}
	if len(out.keys) == 0 {
		return nil, errors.New("no keys")
	}
	return out, nil
}

func (k *APIKeys) add(hash, role, name string) error {
	hexHash, ok := strings.CutPrefix(hash, "sha256:")
	if !ok {
		return errors.New(`the key must be given as "sha256:<hex>" (hash it with: tether-server apikey hash)`)
	}
	raw, err := hex.DecodeString(hexHash)
	if err != nil || len(raw) != sha256.Size {
		return errors.New("sha256: want 64 hex characters")
	}
	r, err := ParseRole(role)
	if err != nil {
		return err
	}
	if name == "" {
		name = hexHash[:8]
	}
	var key APIKey
	copy(key.Hash[:], raw)
	key.Role, key.Name = r, name
	k.keys = append(k.keys, key)
	return nil
}
