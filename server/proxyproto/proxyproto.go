package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
)

// Signature opens every version 2 header.
var Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// MaxHeaderSize bounds a header: the 16 fixed bytes and at most this much
// after them. Addresses take 216 bytes at most (AF_UNIX); the rest is TLVs,
// which balancers keep small (AWS NLB's VPC endpoint id, a few TLS facts).
// A longer header is refused rather than read.
const MaxHeaderSize = 16 + 1024

// Header is a parsed version 2 header.
type Header struct {
	// Local is true for the LOCAL command: the balancer's own connection
	// (a health check); the addresses are to be ignored.
	Local bool
	// Source and Destination are the client's and the address it dialed,
	// for TCP over IPv4 or IPv6; invalid otherwise (UNSPEC, UNIX, UDP).
	Source, Destination netip.AddrPort
	// Size is the header's length in bytes.
	Size int
}

// Errors a header can have. ErrNoHeader means the first bytes are not the
// version 2 signature at all.
var (
	ErrNoHeader = errors.New("proxyproto: no PROXY protocol v2 header")
	ErrV1       = errors.New("proxyproto: PROXY protocol version 1 (text) header; only version 2 is supported")
	ErrTooLarge = fmt.Errorf("proxyproto: header longer than %d bytes", MaxHeaderSize)
	ErrInvalid  = errors.New("proxyproto: malformed header")
)

// Read reads one header from r, consuming exactly its bytes. It never reads
// more than MaxHeaderSize bytes.
func Read(r io.Reader) (Header, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		if bytes.HasPrefix(fixed[:], []byte("PROXY ")) {
			return Header{}, ErrV1
		}
		return Header{}, fmt.Errorf("proxyproto: reading the header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if !bytes.Equal(fixed[:12], Signature) {
		if bytes.HasPrefix(fixed[:], []byte("PROXY ")) {
			return Header{}, ErrV1
		}
		return Header{}, ErrNoHeader
	}
	if 16+n > MaxHeaderSize {
		return Header{}, ErrTooLarge
	}
	buf := make([]byte, 16+n)
	copy(buf, fixed[:])
	if _, err := io.ReadFull(r, buf[16:]); err != nil {
		return Header{}, fmt.Errorf("proxyproto: reading the header: %w", err)
	}
	return Parse(buf)
}

// Parse parses a complete header held in b (exactly its bytes, or more: the
// rest is ignored and Header.Size says where the header ends).
func Parse(b []byte) (Header, error) {
	if len(b) < 16 {
		return Header{}, ErrInvalid
	}
	if !bytes.Equal(b[:12], Signature) {
		if bytes.HasPrefix(b, []byte("PROXY ")) {
			return Header{}, ErrV1
		}
		return Header{}, ErrNoHeader
	}
	verCmd, famProto := b[12], b[13]
	if verCmd>>4 != 2 {
		return Header{}, fmt.Errorf("%w: version %d", ErrInvalid, verCmd>>4)
	}
	n := int(binary.BigEndian.Uint16(b[14:16]))
	if 16+n > MaxHeaderSize {
		return Header{}, ErrTooLarge
	}
	if len(b) < 16+n {
		return Header{}, fmt.Errorf("%w: %d bytes announced, %d present", ErrInvalid, n, len(b)-16)
	}
	h := Header{Size: 16 + n}
	body := b[16 : 16+n]
	switch verCmd & 0x0f {
	case 0x0: // LOCAL
		h.Local = true
		return h, nil
	case 0x1: // PROXY
	default:
		return Header{}, fmt.Errorf("%w: command %#x", ErrInvalid, verCmd&0x0f)
	}
	family, proto := famProto>>4, famProto&0x0f
	var addrLen int
	switch family {
	case 0x0: // UNSPEC: no addresses; keep the connection's own
		return h, nil
	case 0x1:
		addrLen = 12
	case 0x2:
		addrLen = 36
	case 0x3:
		addrLen = 216
	default:
		return Header{}, fmt.Errorf("%w: address family %#x", ErrInvalid, family)
	}
	if n < addrLen {
		return Header{}, fmt.Errorf("%w: %d address bytes, want %d", ErrInvalid, n, addrLen)
	}
	if proto != 0x1 || family == 0x3 {
		// Not TCP over IP: nothing Tether can use as a remote address.
		return h, nil
	}
	ipLen := (addrLen - 4) / 2
	src, _ := netip.AddrFromSlice(body[:ipLen])
	dst, _ := netip.AddrFromSlice(body[ipLen : 2*ipLen])
	sport := binary.BigEndian.Uint16(body[2*ipLen:])
	dport := binary.BigEndian.Uint16(body[2*ipLen+2:])
	h.Source = netip.AddrPortFrom(src.Unmap(), sport)
	h.Destination = netip.AddrPortFrom(dst.Unmap(), dport)
	return h, nil
}

// Append appends a PROXY header for a TCP connection from src to dst (the
// balancer's side of the protocol; tests and tools use it).
func Append(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, Signature...)
	b = append(b, 0x21) // version 2, PROXY
	s, d := src.Addr(), dst.Addr()
	if s.Is4() && d.Is4() {
		b = append(b, 0x11, 0, 12)
	} else {
		b = append(b, 0x21, 0, 36)
		s, d = netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16())
	}
	b = append(b, s.AsSlice()...)
	b = append(b, d.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// tcpAddr converts an AddrPort for net.Conn.RemoteAddr.
func tcpAddr(ap netip.AddrPort) net.Addr { return net.TCPAddrFromAddrPort(ap) }
