package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runWatchFloorRaw is the machine's floor for the watch stream: no net/http
// and no goroutine per watcher. Each watch connection gets its response
// headers and is then only written to: a publish writes each event's chunk
// to every socket with one write(2) each, from one loop per processor. What
// is left is the kernel's cost of a loopback write and the clients' reads,
// the part of a delivery no server can avoid. The same address answers
// POST /publish?n= and GET /metrics (one request per connection).
func runWatchFloorRaw(addr string) {
	ln, err := net.Listen("tcp", addr)
	must(err)
	var (
		mu     sync.Mutex
		fds    []int
		keep   []net.Conn // the sockets stay open while fds has them
		seq    atomic.Int64
		missed atomic.Int64
	)
	publish := func(n int) {
		for range min(max(n, 1), 100) {
			l := floorLine(fmt.Sprintf("1-%d", seq.Add(1)), "EVENT_TYPE_ONLINE", time.Now())
			chunk := append(fmt.Appendf(nil, "%x\r\n", len(l)), l...)
			chunk = append(chunk, "\r\n"...)
			mu.Lock()
			all := fds
			mu.Unlock()
			var wg sync.WaitGroup
			loops := runtime.GOMAXPROCS(0)
			for j := range loops {
				wg.Go(func() {
					for i := j; i < len(all); i += loops {
						if _, err := syscall.Write(all[i], chunk); err != nil {
							missed.Add(1)
						}
					}
				})
			}
			wg.Wait()
		}
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(c)
			line, err := br.ReadSlice('\n')
			if err != nil {
				c.Close()
				return
			}
			for {
				h, err := br.ReadSlice('\n')
				if err != nil {
					c.Close()
					return
				}
				if len(bytes.TrimSpace(h)) == 0 {
					break
				}
			}
			switch {
			case bytes.HasPrefix(line, []byte("GET /v1/devices:watch")):
				_ = c.SetReadDeadline(time.Time{})
				head := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
				l := floorLine("", "EVENT_TYPE_HEARTBEAT", time.Now())
				first := fmt.Sprintf("%s%x\r\n%s\r\n", head, len(l), l)
				if _, err := c.Write([]byte(first)); err != nil {
					c.Close()
					return
				}
				rc, err := c.(*net.TCPConn).SyscallConn()
				must(err)
				_ = rc.Control(func(fd uintptr) {
					mu.Lock()
					fds = append(fds, int(fd))
					keep = append(keep, c)
					mu.Unlock()
				})
			case bytes.HasPrefix(line, []byte("POST /publish")):
				n := 1
				if i := bytes.Index(line, []byte("n=")); i >= 0 {
					f := bytes.Fields(line[i+2:])
					if len(f) > 0 {
						n, _ = strconv.Atoi(string(f[0]))
					}
				}
				publish(n)
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				c.Close()
			default: // GET /metrics
				mu.Lock()
				body := fmt.Sprintf("tether_feed_watchers %d\nfloor_missed_writes %d\n", len(fds), missed.Load())
				mu.Unlock()
				_, _ = fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
				c.Close()
			}
		}()
	}
}
