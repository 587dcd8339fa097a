package access

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tetherhq/tether/api/deviceid"
)

// MinSecretBytes is the shortest token or cluster secret accepted.
const MinSecretBytes = 32

// Token is what a device token says. It is signed, not encrypted: anyone
// holding the token can read it.
type Token struct {
	// DeviceID is the only device id the token may Hello as.
	DeviceID string
	// Expiry is when the token stops being accepted.
	Expiry time.Time
	// ID names the token for revocation (random, 20 hex characters).
	ID string
}

// Signer issues and verifies device tokens with one secret:
//
//	base64url("<device id>|<expiry, unix seconds>|<token id>") "." base64url(HMAC-SHA256(secret, first part))
type Signer struct {
	secret []byte
}

// NewSigner returns a Signer for secret (at least MinSecretBytes).
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("token secret: %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > token.secret)", len(secret), MinSecretBytes)
	}
	return &Signer{secret: bytes.Clone(secret)}, nil
}

// LoadSecret reads a secret file (a bare name is looked up in
// $CREDENTIALS_DIRECTORY, see ResolveSecretPath); surrounding whitespace is
// not part of the secret. what names the secret in errors. A group- or
// world-writable file is refused (CheckSecretFile).
func LoadSecret(path, what string) ([]byte, error) {
	path = ResolveSecretPath(path)
	if _, err := CheckSecretFile(path, what); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretBytes {
		return nil, fmt.Errorf("%s %s: %d bytes, want at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)", what, path, len(b), MinSecretBytes, path)
	}
	return b, nil
}

// Errors from Verify.
var (
	ErrMalformedToken = errors.New("malformed device token")
	ErrBadSignature   = errors.New("device token signature does not match")
	ErrExpiredToken   = errors.New("device token expired")
)

func (s *Signer) sign(payload string) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Issue makes a token for deviceID valid for ttl from now.
func (s *Signer) Issue(deviceID string, ttl time.Duration, now time.Time) (string, Token, error) {
	if err := deviceid.Validate(deviceID); err != nil {
		return "", Token{}, err
	}
	if ttl <= 0 {
		return "", Token{}, fmt.Errorf("token TTL %v is not positive", ttl)
	}
	var id [10]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Token{}, err
	}
	t := Token{DeviceID: deviceID, Expiry: now.Add(ttl).Truncate(time.Second), ID: hex.EncodeToString(id[:])}
	payload := base64.RawURLEncoding.EncodeToString([]byte(t.DeviceID + "|" + strconv.FormatInt(t.Expiry.Unix(), 10) + "|" + t.ID))
	return payload + "." + s.sign(payload), t, nil
}

// Verify checks the signature (in constant time) and the expiry.
func (s *Signer) Verify(tok string, now time.Time) (Token, error) {
	payload, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return Token{}, ErrMalformedToken
	}
	if !hmac.Equal([]byte(sig), []byte(s.sign(payload))) {
		return Token{}, ErrBadSignature
	}
	t, err := ParseToken(tok)
	if err != nil {
		return Token{}, err
	}
	if !now.Before(t.Expiry) {
		return t, fmt.Errorf("%w at %s", ErrExpiredToken, t.Expiry.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// ParseToken reads a token's claims WITHOUT checking its signature (for
// `tether-server token revoke`, which only needs the id and expiry).
func ParseToken(tok string) (Token, error) {
	payload, _, _ := strings.Cut(strings.TrimSpace(tok), ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return Token{}, ErrMalformedToken
	}
	parts := strings.Split(string(raw), "|")
	if len(parts) != 3 || deviceid.Validate(parts[0]) != nil || parts[2] == "" {
		return Token{}, ErrMalformedToken
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return Token{}, ErrMalformedToken
	}
	return Token{DeviceID: parts[0], Expiry: time.Unix(exp, 0), ID: parts[2]}, nil
}
