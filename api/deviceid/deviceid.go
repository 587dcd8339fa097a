// Package deviceid owns the rules for device ids: what a valid id is, and the
// agent's default id derived from a MAC address. Server and agent share it so
// both sides agree on exactly one definition.
package deviceid

import (
	"fmt"
	"net"
	"strings"
)

// MaxLen is the longest valid device id.
const MaxLen = 64

// Validate reports why id is not a valid device id: 1-64 characters of
// [A-Za-z0-9._-].
func Validate(id string) error {
	if id == "" {
		return fmt.Errorf("device id is empty; want 1-%d characters of [A-Za-z0-9._-]", MaxLen)
	}
	if len(id) > MaxLen {
		return fmt.Errorf("device id is %d characters long; want at most %d", len(id), MaxLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Errorf("device id has character %q at offset %d; want only [A-Za-z0-9._-]", rune(c), i)
		}
	}
	return nil
}

// FromMAC returns the default device id for a hardware address: lowercase hex
// octets joined by dashes (aa-bb-cc-dd-ee-ff).
func FromMAC(mac net.HardwareAddr) string {
	return strings.ReplaceAll(strings.ToLower(mac.String()), ":", "-")
}
