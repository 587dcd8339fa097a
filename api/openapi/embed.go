package openapi

import (
	"bytes"
	_ "embed"
)

//go:embed tether.swagger.json
var document []byte

// JSON returns the merged OpenAPI v2 document (tether.swagger.json) as JSON.
// Each call returns a fresh copy, so callers may keep or modify it.
func JSON() []byte {
	return bytes.Clone(document)
}
