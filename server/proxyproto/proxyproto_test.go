package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func header(t *testing.T, src, dst string) []byte {
	t.Helper()
	return Append(nil, netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst))
}

func TestParse(t *testing.T) {
	v4 := header(t, "203.0.113.7:51000", "10.0.0.5:7070")
	v6 := header(t, "[2001:db8::7]:51000", "[2001:db8::1]:7070")
	local := append(append([]byte{}, Signature...), 0x20, 0x00, 0, 0)
	withTLV := append(append([]byte{}, v4...), 0x04, 0, 3, 'a', 'b', 'c') // a NOOP TLV
	binary.BigEndian.PutUint16(withTLV[14:], 12+6)
	huge := append(append([]byte{}, Signature...), 0x21, 0x11, 0xff, 0xff)
	for _, tc := range []struct {
		name    string
		in      []byte
		src     string
		local   bool
		size    int
		wantErr error
	}{
		{"tcp over ipv4", v4, "203.0.113.7:51000", false, 28, nil},
		{"tcp over ipv6", v6, "[2001:db8::7]:51000", false, 52, nil},
		{"local (a health check)", local, "", true, 16, nil},
		{"tlvs are skipped", withTLV, "203.0.113.7:51000", false, 34, nil},
		{"no signature", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "", false, 0, ErrNoHeader},
		{"version 1", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), "", false, 0, ErrV1},
		{"too large", huge, "", false, 0, ErrTooLarge},
		{"truncated", v4[:20], "", false, 0, ErrInvalid},
		{"short addresses", append(append([]byte{}, Signature...), 0x21, 0x11, 0, 4, 1, 2, 3, 4), "", false, 0, ErrInvalid},
		{"bad version", append(append([]byte{}, Signature...), 0x31, 0x11, 0, 0), "", false, 0, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Parse(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Local != tc.local || h.Size != tc.size {
				t.Fatalf("header = %+v", h)
			}
			if tc.src != "" && h.Source.String() != tc.src {
				t.Fatalf("source = %v, want %s", h.Source, tc.src)
			}
		})
	}
}

func TestReadConsumesExactlyTheHeader(t *testing.T) {
	in := append(header(t, "203.0.113.7:51000", "10.0.0.5:7070"), "PRI * HTTP/2.0"...)
	r := bytes.NewReader(in)
	if _, err := Read(r); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "PRI * HTTP/2.0" {
		t.Fatalf("after the header: %q", rest)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes("10.0.0.0/8, 192.168.1.10,::1")
	if err != nil || len(got) != 3 || got[1].String() != "192.168.1.10/32" || got[2].String() != "::1/128" {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Fatal("a bad CIDR was accepted")
	}
}

// serve accepts one connection on a Listener trusting trusted and returns
// what the server saw: the remote address and the first bytes after any
// header, or the read error.
func serve(t *testing.T, trusted string, send []byte) (remote string, got string, err error) {
	t.Helper()
	inner, e := net.Listen("tcp", "127.0.0.1:0")
	if e != nil {
		t.Fatal(e)
	}
	defer inner.Close()
	pr, _ := ParsePrefixes(trusted)
	l := &Listener{Listener: inner, Trusted: pr, HeaderTimeout: 2 * time.Second}
	c, e := net.Dial("tcp", inner.Addr().String())
	if e != nil {
		t.Fatal(e)
	}
	defer c.Close()
	if _, e := c.Write(send); e != nil {
		t.Fatal(e)
	}
	sc, e := l.Accept()
	if e != nil {
		t.Fatal(e)
	}
	defer sc.Close()
	remote = sc.RemoteAddr().String()
	buf := make([]byte, 5)
	_, err = io.ReadFull(sc, buf)
	return remote, string(buf), err
}

func TestListener(t *testing.T) {
	h := header(t, "203.0.113.7:51000", "127.0.0.1:7070")
	t.Run("trusted source: the header names the client", func(t *testing.T) {
		remote, got, err := serve(t, "127.0.0.0/8", append(h, "hello"...))
		if err != nil || remote != "203.0.113.7:51000" || got != "hello" {
			t.Fatalf("remote %s, got %q, err %v", remote, got, err)
		}
	})
	t.Run("trusted source without a header keeps its address", func(t *testing.T) {
		remote, got, err := serve(t, "127.0.0.0/8", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		if err != nil || remote[:10] != "127.0.0.1:" || got != "PRI *" {
			t.Fatalf("remote %s, got %q, err %v", remote, got, err)
		}
	})
	t.Run("trusted source with a version 1 header is refused", func(t *testing.T) {
		_, _, err := serve(t, "127.0.0.0/8", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"))
		if !errors.Is(err, ErrV1) {
			t.Fatalf("err = %v, want ErrV1", err)
		}
	})
	t.Run("trusted source with a truncated header is refused", func(t *testing.T) {
		_, _, err := serve(t, "127.0.0.0/8", h[:20])
		if err == nil {
			t.Fatal("a truncated header was accepted")
		}
	})
	t.Run("untrusted source: a header is not believed", func(t *testing.T) {
		remote, got, err := serve(t, "10.0.0.0/8", append(h, "hello"...))
		if err != nil || remote == "203.0.113.7:51000" || got != string(h[:5]) {
			t.Fatalf("remote %s, got %q, err %v", remote, got, err)
		}
	})
	t.Run("local command keeps the balancer's address", func(t *testing.T) {
		local := append(append([]byte{}, Signature...), 0x20, 0x00, 0, 0)
		remote, got, err := serve(t, "127.0.0.1", append(local, "hello"...))
		if err != nil || remote[:10] != "127.0.0.1:" || got != "hello" {
			t.Fatalf("remote %s, got %q, err %v", remote, got, err)
		}
	})
}
