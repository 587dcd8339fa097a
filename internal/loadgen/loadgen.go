package loadgen

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// The agents' transport keepalive and socket timeout, the shipped agent's
// numbers (agent/keepalive.go): the server enforces a 10s MinTime.
const (
	keepaliveTime    = 20 * time.Second
	keepaliveTimeout = 5 * time.Second
	tcpUserTimeout   = 30 * time.Second
)

// runner is one Run.
type runner struct {
	cfg         Config
	st          *stats
	agents      []agent
	legacy      int
	targets     []string            // "passthrough:///host:port" per server
	dialOpts    [][]grpc.DialOption // per source ip (one entry when none)
	info        *tetherv1.DeviceInfo
	dials       chan struct{} // MaxDials slots
	fdLimit     uint64
	baselineRSS int64
	// stopping is set once the hold time is over, so that errors caused by
	// our own shutdown are not counted.
	stopping atomic.Bool
	// cmdCountFrom is when command results start to count (unix nanos; the
	// start of the command drive plus CommandsWarmup).
	cmdCountFrom atomic.Int64
}

// Run simulates cfg.Devices agents until cfg.Duration has passed (or ctx
// ends), then closes every session and returns the final report. It
// returns an error without dialing anything when the configuration is
// invalid or the devices would not fit the process's open-file limit.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	limit, err := raiseFDLimit()
	if err != nil && limit == 0 {
		return nil, fmt.Errorf("open-file limit: %w", err)
	}
	if uint64(cfg.Devices)+fdReserve > limit {
		return nil, fmt.Errorf("%d devices do not fit this process's open-file limit of %d (one descriptor per connection, %d kept in reserve): "+
			"use at most %d devices per process and run several loadgen processes with distinct --id-prefix values",
			cfg.Devices, limit, fdReserve, int64(limit)-fdReserve)
	}
	r := newRunner(cfg, limit)
	return r.run(ctx), nil
}

func newRunner(cfg Config, fdLimit uint64) *runner {
	r := &runner{
		cfg:         cfg,
		st:          newStats(cfg.Devices),
		agents:      make([]agent, cfg.Devices),
		dials:       make(chan struct{}, cfg.MaxDials),
		fdLimit:     fdLimit,
		baselineRSS: rssBytes(),
		info: &tetherv1.DeviceInfo{
			Os:           "linux",
			Arch:         runtime.GOARCH,
			AgentVersion: cfg.AgentVersion,
			BootId:       fmt.Sprintf("loadgen-%d-%d", os.Getpid(), time.Now().UnixNano()),
			Labels:       map[string]string{"loadgen": "true"},
		},
	}
	for _, s := range cfg.Servers {
		r.targets = append(r.targets, "passthrough:///"+s)
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: keepaliveTime, Timeout: keepaliveTimeout}),
		grpc.WithInitialWindowSize(cfg.WindowSize),
		grpc.WithInitialConnWindowSize(cfg.WindowSize),
		grpc.WithReadBufferSize(cfg.ReadBufferSize),
		grpc.WithWriteBufferSize(cfg.WriteBufferSize),
		// No retry buffer, no service config or health checks: one plain
		// stream per connection.
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithDisableHealthCheck(),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: cfg.DialTimeout}),
		grpc.WithUserAgent("tether-loadgen/" + cfg.AgentVersion),
	}
	withDialer := func(local net.Addr) []grpc.DialOption {
		d := &net.Dialer{Timeout: cfg.DialTimeout, LocalAddr: local, Control: socketControl(local != nil)}
		return append(base[:len(base):len(base)], grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	}
	if len(cfg.SourceIPs) == 0 {
		r.dialOpts = [][]grpc.DialOption{withDialer(nil)}
	}
	for _, ip := range cfg.SourceIPs {
		r.dialOpts = append(r.dialOpts, withDialer(&net.TCPAddr{IP: ip.AsSlice()}))
	}
	for i := range r.agents {
		a := &r.agents[i]
		a.r = r
		a.id = cfg.IDPrefix + strconv.Itoa(i)
		a.legacy = isLegacy(i, cfg.LegacyFraction)
		if a.legacy {
			r.legacy++
		}
		// Agent i goes to server i mod S; the source address walks the
		// agents of one server, so every (source, server) pair gets an
		// equal share of the 4-tuples.
		a.server = i % len(cfg.Servers)
		a.source = (i / len(cfg.Servers)) % len(r.dialOpts)
	}
	return r
}

func (r *runner) run(ctx context.Context) *Report {
	holdCtx, cancelHold := context.WithCancel(ctx)
	if r.cfg.Duration > 0 {
		holdCtx, cancelHold = context.WithTimeout(ctx, r.cfg.Duration)
	}
	defer cancelHold()
	// The agents outlive the hold context by design: they are cancelled
	// only after the command driver has stopped and the final snapshot is
	// taken.
	agentCtx, cancelAgents := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAgents()

	var agentsWG, helpersWG sync.WaitGroup
	helpersWG.Go(func() { r.launch(holdCtx, agentCtx, &agentsWG) })
	if r.cfg.ReportEvery > 0 && r.cfg.Progress != nil {
		helpersWG.Go(func() { r.progress(holdCtx) })
	}
	if r.cfg.CommandsRate > 0 {
		helpersWG.Go(func() { r.driveCommands(holdCtx) })
	}
	<-holdCtx.Done()
	r.stopping.Store(true)
	helpersWG.Wait() // the launcher, the reporter and every SendCommand have finished

	final := r.snapshot()
	began := time.Now()
	cancelAgents()
	done := make(chan struct{})
	go func() { agentsWG.Wait(); close(done) }()
	t := time.NewTimer(r.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-done:
		final.CleanShutdown = true
	case <-t.C:
	}
	final.ShutdownSeconds = round3(time.Since(began).Seconds())
	return final
}

// launch starts the agents, paced by Ramp.
func (r *runner) launch(holdCtx, agentCtx context.Context, wg *sync.WaitGroup) {
	start := time.Now()
	var t *time.Timer
	for i := range r.agents {
		if r.cfg.Ramp > 0 {
			due := start.Add(time.Duration(float64(i) / r.cfg.Ramp * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				if t == nil {
					t = time.NewTimer(d)
					defer t.Stop()
				} else {
					t.Reset(d)
				}
				select {
				case <-t.C:
				case <-holdCtx.Done():
					return
				}
			}
		}
		if holdCtx.Err() != nil {
			return
		}
		a := &r.agents[i]
		wg.Go(func() { a.run(agentCtx) })
	}
}

// progress writes a report line every ReportEvery until ctx ends.
func (r *runner) progress(ctx context.Context) {
	tick := time.NewTicker(r.cfg.ReportEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			_, _ = io.WriteString(r.cfg.Progress, r.snapshot().Line()+"\n")
		case <-ctx.Done():
			return
		}
	}
}

// acquireDial takes a dial slot; false when ctx ended first.
func (r *runner) acquireDial(ctx context.Context) bool {
	select {
	case r.dials <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *runner) releaseDial() { <-r.dials }
