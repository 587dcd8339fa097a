package testredis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startTimeout bounds how long a redis-server may take to accept connections.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	args []string // extra redis-server arguments (Options.Args)
	more []string // arguments of the last RestartWith

	mu      sync.Mutex // guards the following
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	frozen  bool
	clients []*redis.Client
}

// Options configures a server started by StartWith.
type Options struct {
	// Args are extra redis-server arguments ("--maxmemory", "10mb", ...).
	Args []string
	// ArgsIn returns more arguments given the server's own directory.
	ArgsIn func(dir string) []string
	// Port is the port to listen on; 0 picks a free one.
	Port int
}

// Start starts a redis-server for tb and stops it when tb ends. It fails tb
// when redis-server is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("testredis: redis-server is not in PATH (%v); `make test` installs it (make deps: apt-get install redis-server)", err)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir()}
	s.args = append(s.args, opts.Args...)
	if opts.ArgsIn != nil {
		s.args = append(s.args, opts.ArgsIn(s.dir)...)
	}
	tb.Cleanup(s.cleanup)
	var lastErr error
	for range 5 { // a free port may be taken between probing and binding
		port := opts.Port
		if port == 0 {
			if port, err = freePort(); err != nil {
				tb.Fatalf("testredis: %v", err)
			}
		}
		s.port = port
		if lastErr = s.start(); lastErr == nil {
			return s
		}
		if opts.Port != 0 {
			break
		}
	}
	tb.Fatalf("testredis: %v", lastErr)
	return nil
}

// Port is the server's TCP port.
func (s *Server) Port() int { return s.port }

// Dir is the server's working directory (kept across restarts).
func (s *Server) Dir() string { return s.dir }

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns a redis:// URL for the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a new go-redis client of the server, closed when the test
// ends. Its commands honour context deadlines.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true})
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return c
}

// Stop kills the server; its data is lost. Stopping a stopped server does
// nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Restart stops the server and starts a new, empty one on the same port.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var err error
	deadline := time.Now().Add(startTimeout)
	for {
		if err = s.start(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // the port may still be held briefly
	}
	if err != nil {
		s.tb.Fatalf("testredis: restart: %v", err)
	}
}

// RestartWith is Restart with more redis-server arguments, which replace
// those of an earlier RestartWith and stay for later restarts: for example
// a server that comes back empty and already refusing writes
// ("--maxmemory", "1").
func (s *Server) RestartWith(args ...string) {
	s.tb.Helper()
	s.mu.Lock()
	s.more = args
	s.mu.Unlock()
	s.Restart()
}

// Freeze suspends the server (SIGSTOP): connections stay open but nothing
// is answered, like a hung or partitioned Redis.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP, true) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, frozen bool) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatalf("testredis: %v: server is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("testredis: %v: %v", sig, err)
	}
	s.frozen = frozen
}

func (s *Server) start() error {
	logFile := filepath.Join(s.dir, "redis.log")
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logFile,
		"--daemonize", "no",
	}
	args = append(append(args, s.args...), s.more...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()

	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	if err := awaitPing(func(ctx context.Context) error { return c.Ping(ctx).Err() }, cmd, exited, fmt.Sprintf("redis-server on port %d", s.port), logFile); err != nil {
		return err
	}
	s.mu.Lock()
	s.cmd, s.exited, s.frozen = cmd, exited, false
	s.mu.Unlock()
	return nil
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	if s.frozen {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		s.frozen = false
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited = nil, nil
}

func (s *Server) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		_ = c.Close()
	}
	s.clients = nil
	s.stopLocked()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string) string {
	const max = 1000
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	return s
}

// awaitPing waits until ping succeeds, the process exits (its log's last
// lines say why), or startTimeout passes (the process is killed).
func awaitPing(ping func(context.Context) error, cmd *exec.Cmd, exited <-chan struct{}, what, logFile string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logFile)
			return fmt.Errorf("%s exited at start: %s", what, lastLines(string(log)))
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s did not answer PING within %v: %v", what, startTimeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
