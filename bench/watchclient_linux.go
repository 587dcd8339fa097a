package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// runWatchClient is the client process: it opens n watches on base (one
// HTTP/1.1 connection each), records when each event arrives, and writes its
// report when it gets SIGTERM.
//
// It is written the way load tools such as wrk are: one epoll loop reads
// every connection, with no goroutine, http.Transport or JSON decoding per
// line. The client processes share the machine's 2 cores with the replica,
// so their cost per delivered line is part of the latency they measure, and
// a client that costs more than the server would measure itself.
func runWatchClient(base string, n int, out string) {
	u, err := url.Parse(base)
	must(err)
	addr, err := net.ResolveTCPAddr("tcp4", u.Host)
	must(err)
	var sa syscall.SockaddrInet4
	copy(sa.Addr[:], addr.IP.To4())
	sa.Port = addr.Port
	request := []byte("GET /v1/devices:watch HTTP/1.1\r\nHost: " + u.Host + "\r\nAccept: */*\r\n\r\n")

	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	must(err)
	var (
		conns   [1 << 16]atomic.Pointer[watchConn]
		opened  atomic.Int64 // connections set up
		started atomic.Int64 // watches that got their first line
		failed  atomic.Int64
		stop    atomic.Bool
	)
	loopDone := make(chan watchReport)
	go func() {
		var rep watchReport
		evs := make([]syscall.EpollEvent, 256)
		buf := make([]byte, 64<<10)
		for !stop.Load() {
			k, err := syscall.EpollWait(epfd, evs, 100)
			if err != nil {
				continue // EINTR
			}
			now := time.Now()
			for _, ev := range evs[:k] {
				c := conns[ev.Fd].Load()
				if c == nil || c.closed {
					continue
				}
				if !c.readAll(buf, now, &rep) {
					c.closed = true
					_ = syscall.Close(c.fd)
					if !stop.Load() {
						failed.Add(1) // ended before we stopped
					}
				}
				if c.first && !c.counted {
					c.counted = true
					started.Add(1)
				}
			}
		}
		loopDone <- rep
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	go func() {
		for i := 0; i < n; i++ {
			// At most 50 watches waiting for their first line at once.
			for opened.Load()-started.Load()-failed.Load() >= 50 && !stop.Load() {
				time.Sleep(time.Millisecond)
			}
			if stop.Load() {
				return
			}
			fd, err := dialWatch(&sa, request)
			if err != nil || fd >= len(conns) {
				if err == nil {
					_ = syscall.Close(fd)
				}
				failed.Add(1)
				continue
			}
			conns[fd].Store(&watchConn{fd: fd})
			opened.Add(1)
			ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: int32(fd)}
			if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
				failed.Add(1)
			}
		}
	}()
	<-sig
	stop.Store(true)
	rep := <-loopDone
	rep.Open = int(started.Load())
	rep.Failed = int(failed.Load())
	b, _ := json.Marshal(rep)
	_ = os.WriteFile(out, b, 0o644)
}

// epollET is EPOLLET as the uint32 of EpollEvent.Events (syscall.EPOLLET is
// a negative int).
const epollET = 1 << 31

// dialWatch connects, sends the watch request and returns the non-blocking
// socket.
func dialWatch(sa *syscall.SockaddrInet4, request []byte) (int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := syscall.Connect(fd, sa); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	if _, err := syscall.Write(fd, request); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// watchConn is one watch's connection, read by the epoll loop only.
type watchConn struct {
	fd      int
	closed  bool
	first   bool // got its first line
	counted bool
	state   int    // what the parser expects next (chunk* below)
	left    int    // bytes left in the current chunk
	in      []byte // bytes read and not yet parsed
	line    []byte // the current line of the body, across chunks
}

const (
	chunkHeaders = iota // the response's status line and headers
	chunkSize           // a chunk-size line
	chunkData           // chunk data (left bytes)
	chunkEnd            // the CRLF after a chunk's data
)

// readAll reads what the socket has and parses it; false when the
// connection ended or the response is not a 200 chunked stream.
func (c *watchConn) readAll(buf []byte, now time.Time, rep *watchReport) bool {
	for {
		k, err := syscall.Read(c.fd, buf)
		if err == syscall.EAGAIN {
			return true
		}
		if err == syscall.EINTR {
			continue
		}
		if err != nil || k == 0 {
			return false
		}
		c.in = append(c.in, buf[:k]...)
		if !c.parse(now, rep) {
			return false
		}
	}
}

// parse consumes c.in: the headers, then the chunked body, line by line;
// what is left (an incomplete size line or headers) moves to c.in's start.
func (c *watchConn) parse(now time.Time, rep *watchReport) bool {
	in := c.in
	defer func() { c.in = c.in[:copy(c.in, in)] }()
	for len(in) > 0 {
		switch c.state {
		case chunkHeaders:
			i := bytes.Index(in, []byte("\r\n\r\n"))
			if i < 0 {
				return true
			}
			head := in[:i]
			if !bytes.HasPrefix(head, []byte("HTTP/1.1 200")) || !bytes.Contains(bytes.ToLower(head), []byte("transfer-encoding: chunked")) {
				return false
			}
			in = in[i+4:]
			c.state = chunkSize
		case chunkSize:
			i := bytes.Index(in, []byte("\r\n"))
			if i < 0 {
				return true
			}
			sz := in[:i]
			if j := bytes.IndexByte(sz, ';'); j >= 0 {
				sz = sz[:j]
			}
			v, err := strconv.ParseInt(string(bytes.TrimSpace(sz)), 16, 64)
			if err != nil || v == 0 {
				return false // a bad size, or the last chunk: the stream ended
			}
			in = in[i+2:]
			c.left, c.state = int(v), chunkData
		case chunkData:
			data := in[:min(c.left, len(in))]
			in = in[len(data):]
			if c.left -= len(data); c.left == 0 {
				c.state = chunkEnd
			}
			for len(data) > 0 {
				i := bytes.IndexByte(data, '\n')
				if i < 0 {
					c.line = append(c.line, data...)
					break
				}
				line := data[:i]
				if len(c.line) > 0 {
					c.line = append(c.line, line...)
					line = c.line
				}
				c.first = true
				if at, ok := eventTime(line); ok {
					rep.Events++
					rep.Latencies = append(rep.Latencies, now.Sub(at).Milliseconds())
				}
				c.line = c.line[:0]
				data = data[i+1:]
			}
		case chunkEnd:
			if len(in) < 2 {
				return true
			}
			in = in[2:]
			c.state = chunkSize
		}
	}
	return true
}
