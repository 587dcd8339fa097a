package proxyproto

import (
	"bytes"
	"testing"
)

// FuzzParse: Parse never panics, never claims more bytes than it was given
// or than MaxHeaderSize, and Read agrees with it.
func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
	f.Add(append(append([]byte{}, Signature...), 0x20, 0x00, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Parse(b)
		if err != nil {
			return
		}
		if h.Size < 16 || h.Size > len(b) || h.Size > MaxHeaderSize {
			t.Fatalf("size %d for %d input bytes", h.Size, len(b))
		}
		h2, err := Read(bytes.NewReader(b))
		if err != nil || h2 != h {
			t.Fatalf("Read = %+v, %v; Parse = %+v", h2, err, h)
		}
	})
}
