package loadgen

import (
	"fmt"
	"maps"
	"runtime"
	"runtime/metrics"
	"slices"
	"strings"
	"time"
)

// Report is a snapshot of a run. The final one (returned by Run) is taken
// when the hold time ends, before the sessions are closed, so that the
// connection, fd and memory numbers describe the steady state; the Shutdown
// fields are filled in after the close.
type Report struct {
	ElapsedSeconds float64  `json:"elapsed_seconds"`
	Servers        []string `json:"servers"`
	SourceIPs      int      `json:"source_ips"`
	TargetDevices  int      `json:"target_devices"`
	LegacyDevices  int      `json:"legacy_devices"`

	// Connected is the number of sessions up (HelloAck received) now.
	Connected     int64 `json:"connected"`
	MaxConnected  int64 `json:"max_connected"`
	EverConnected int64 `json:"ever_connected"`
	AllConnected  bool  `json:"all_connected"`
	// TimeToConnectAllSeconds is from the start until every device had its
	// first HelloAck; null until then.
	TimeToConnectAllSeconds *float64 `json:"time_to_connect_all_seconds"`
	// ConnectRatePerSecond is first connects per second: target over
	// TimeToConnectAll once all are in, ever_connected over the elapsed
	// time before.
	ConnectRatePerSecond float64 `json:"connect_rate_per_second"`

	ConnectAttempts  int64 `json:"connect_attempts"`
	ConnectSuccesses int64 `json:"connect_successes"`
	ConnectFailures  int64 `json:"connect_failures"`
	// ConnectFailuresByCode keys are gRPC code names ("Unavailable",
	// "DeadlineExceeded" for the dial timeout) or, for a Close received
	// instead of a HelloAck, the Close reason ("FLAPPING").
	ConnectFailuresByCode map[string]int64 `json:"connect_failures_by_code"`
	// ClosedByReason counts established sessions the server ended with a
	// Close, by reason without the DISCONNECT_REASON_ prefix ("DRAINING").
	ClosedByReason map[string]int64 `json:"closed_by_reason"`
	// StreamErrorsByCode counts established sessions that ended without a
	// Close, by gRPC code ("Unavailable", "EOF" for a bare end of stream).
	StreamErrorsByCode map[string]int64 `json:"stream_errors_by_code"`
	// ErrorSamples holds the first error text per "kind key"
	// ("connect Unavailable", "stream EOF", "command DeadlineExceeded").
	ErrorSamples map[string]string `json:"error_samples,omitempty"`

	PingsAnswered    int64 `json:"pings_answered"`
	PingsIgnored     int64 `json:"pings_ignored"`
	CommandsAnswered int64 `json:"commands_answered"`

	// Commands is the SendCommand driver's view; absent when disabled.
	Commands *CommandReport `json:"commands,omitempty"`

	Process ProcessReport `json:"process"`

	// ShutdownSeconds is how long closing every session took and
	// CleanShutdown whether all agents finished within the shutdown
	// timeout (final report only).
	ShutdownSeconds float64 `json:"shutdown_seconds,omitempty"`
	CleanShutdown   bool    `json:"clean_shutdown"`
}

// CommandReport covers the SendCommand "echo" calls.
type CommandReport struct {
	RatePerSecond float64 `json:"rate_per_second"`
	Via           string  `json:"via"`
	Sent          int64   `json:"sent"`
	OK            int64   `json:"ok"`
	// Skipped counts calls that were due while all concurrency slots were
	// busy or no device was connected.
	Skipped int64 `json:"skipped"`
	// ErrorsByCode keys are gRPC code names, plus "Mismatch" for a result
	// that is not the echo of the arguments.
	ErrorsByCode map[string]int64 `json:"errors_by_code"`
	// LatencyMS is the round trip of successful calls, in milliseconds.
	LatencyMS LatencyReport `json:"latency_ms"`
	// WindowSeconds is how long results were counted (after the warm-up).
	WindowSeconds float64 `json:"window_seconds"`
}

// ProcessReport describes the load generator process itself.
type ProcessReport struct {
	OpenFDs int    `json:"open_fds"`
	FDLimit uint64 `json:"fd_limit"`
	// RSSBytes is VmRSS; BaselineRSSBytes is VmRSS before the first dial;
	// RSSPerConnectionBytes is (RSS - baseline) / connected.
	RSSBytes              int64 `json:"rss_bytes"`
	BaselineRSSBytes      int64 `json:"baseline_rss_bytes"`
	RSSPerConnectionBytes int64 `json:"rss_per_connection_bytes"`
	// GoHeapBytes is the live+unswept Go heap (runtime/metrics
	// /memory/classes/heap/objects:bytes).
	GoHeapBytes int64 `json:"go_heap_bytes"`
	// GoStackBytes is the memory of goroutine stacks
	// (/memory/classes/heap/stacks:bytes).
	GoStackBytes            int64   `json:"go_stack_bytes"`
	Goroutines              int     `json:"goroutines"`
	GoroutinesPerConnection float64 `json:"goroutines_per_connection"`
}

// snapshot builds a Report from the counters now.
func (r *runner) snapshot() *Report {
	s := r.st
	elapsed := time.Since(s.start)
	failures, closed, streamErrs, cmdErrs, samples := s.copyMaps()
	rep := &Report{
		ElapsedSeconds:        round3(elapsed.Seconds()),
		Servers:               r.cfg.Servers,
		SourceIPs:             len(r.cfg.SourceIPs),
		TargetDevices:         r.cfg.Devices,
		LegacyDevices:         r.legacy,
		Connected:             s.connected.Load(),
		MaxConnected:          s.maxConnected.Load(),
		EverConnected:         s.everConnected.Load(),
		ConnectAttempts:       s.attempts.Load(),
		ConnectSuccesses:      s.successes.Load(),
		ConnectFailures:       s.failures.Load(),
		ConnectFailuresByCode: failures,
		ClosedByReason:        closed,
		StreamErrorsByCode:    streamErrs,
		PingsAnswered:         s.pingsAnswered.Load(),
		PingsIgnored:          s.pingsIgnored.Load(),
		CommandsAnswered:      s.commandsAnswered.Load(),
	}
	if len(samples) > 0 {
		rep.ErrorSamples = samples
	}
	if at := s.allAt.Load(); at > 0 {
		sec := round3(time.Duration(at).Seconds())
		rep.AllConnected = true
		rep.TimeToConnectAllSeconds = &sec
		rep.ConnectRatePerSecond = round3(float64(s.target) / time.Duration(at).Seconds())
	} else if elapsed > 0 {
		rep.ConnectRatePerSecond = round3(float64(rep.EverConnected) / elapsed.Seconds())
	}
	if r.cfg.CommandsRate > 0 {
		rep.Commands = &CommandReport{
			RatePerSecond: r.cfg.CommandsRate,
			Via:           via(r.cfg),
			Sent:          s.cmdSent.Load(),
			OK:            s.cmdOK.Load(),
			Skipped:       s.cmdSkipped.Load(),
			ErrorsByCode:  cmdErrs,
			LatencyMS:     s.cmdLatency.report(),
			WindowSeconds: max(0, time.Since(time.Unix(0, r.cmdCountFrom.Load())).Seconds()),
		}
	}
	p := &rep.Process
	p.OpenFDs = openFDs()
	p.FDLimit = r.fdLimit
	p.RSSBytes = rssBytes()
	p.BaselineRSSBytes = r.baselineRSS
	p.Goroutines = runtime.NumGoroutine()
	if rep.Connected > 0 {
		if p.RSSBytes > 0 && r.baselineRSS > 0 {
			p.RSSPerConnectionBytes = max(0, p.RSSBytes-r.baselineRSS) / rep.Connected
		}
		p.GoroutinesPerConnection = round3(float64(p.Goroutines) / float64(rep.Connected))
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		p.GoHeapBytes = int64(sample[0].Value.Uint64())
	}
	if sample[1].Value.Kind() == metrics.KindUint64 {
		p.GoStackBytes = int64(sample[1].Value.Uint64())
	}
	return rep
}

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}

// Line renders the report as one progress line, e.g. (wrapped here)
//
//	t=40.0s target=15000 connected=15000 ever=15000 all=27.3s(550/s) attempts=15000
//	fail=0 closed=0 broke=0 pings=42249 ignored=0 answered_cmds=4097 cmds=4097 ok=4097
//	skipped=3902 err=0 p50=1.21ms p99=4112.38ms p99.9=4751.36ms fds=15010/20000
//	rss=953.8MiB(64.4KiB/conn) heap=438.6MiB stacks=460.5MiB goroutines=120010
//
// Maps are appended to their totals as {key=n,...} when not empty, e.g.
// fail=12{Unavailable=12}; before all devices are in, all=... is replaced by
// rate=N/s (first connects per second so far).
func (r *Report) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%.1fs target=%d connected=%d ever=%d", r.ElapsedSeconds, r.TargetDevices, r.Connected, r.EverConnected)
	if r.TimeToConnectAllSeconds != nil {
		fmt.Fprintf(&b, " all=%.1fs(%.0f/s)", *r.TimeToConnectAllSeconds, r.ConnectRatePerSecond)
	} else {
		fmt.Fprintf(&b, " rate=%.0f/s", r.ConnectRatePerSecond)
	}
	fmt.Fprintf(&b, " attempts=%d fail=%d%s closed=%d%s broke=%d%s pings=%d ignored=%d answered_cmds=%d",
		r.ConnectAttempts, r.ConnectFailures, counts(r.ConnectFailuresByCode),
		sum(r.ClosedByReason), counts(r.ClosedByReason),
		sum(r.StreamErrorsByCode), counts(r.StreamErrorsByCode),
		r.PingsAnswered, r.PingsIgnored, r.CommandsAnswered)
	if c := r.Commands; c != nil {
		l := c.LatencyMS
		fmt.Fprintf(&b, " cmds=%d ok=%d skipped=%d err=%d%s p50=%.2fms p99=%.2fms p99.9=%.2fms",
			c.Sent, c.OK, c.Skipped, sum(c.ErrorsByCode), counts(c.ErrorsByCode), l.P50, l.P99, l.P999)
	}
	p := r.Process
	fmt.Fprintf(&b, " fds=%d/%d rss=%s", p.OpenFDs, p.FDLimit, size(p.RSSBytes))
	if p.RSSPerConnectionBytes > 0 {
		fmt.Fprintf(&b, "(%s/conn)", size(p.RSSPerConnectionBytes))
	}
	fmt.Fprintf(&b, " heap=%s stacks=%s goroutines=%d", size(p.GoHeapBytes), size(p.GoStackBytes), p.Goroutines)
	return b.String()
}

// Text renders the final report for people, one item a line.
func (r *Report) Text() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	w("elapsed:              %.1fs", r.ElapsedSeconds)
	w("servers:              %s (source ips: %d)", strings.Join(r.Servers, ","), r.SourceIPs)
	w("target devices:       %d (%d legacy)", r.TargetDevices, r.LegacyDevices)
	w("connected:            %d (max %d, ever %d)", r.Connected, r.MaxConnected, r.EverConnected)
	if r.TimeToConnectAllSeconds != nil {
		w("time to connect all:  %.3fs (%.1f/s)", *r.TimeToConnectAllSeconds, r.ConnectRatePerSecond)
	} else {
		w("time to connect all:  not all connected (%.1f/s so far)", r.ConnectRatePerSecond)
	}
	w("connect attempts:     %d (ok %d, failed %d%s)", r.ConnectAttempts, r.ConnectSuccesses, r.ConnectFailures, counts(r.ConnectFailuresByCode))
	w("closed by server:     %d%s", sum(r.ClosedByReason), counts(r.ClosedByReason))
	w("broken streams:       %d%s", sum(r.StreamErrorsByCode), counts(r.StreamErrorsByCode))
	w("pings answered:       %d (ignored by legacy agents: %d)", r.PingsAnswered, r.PingsIgnored)
	w("commands answered:    %d", r.CommandsAnswered)
	if c := r.Commands; c != nil {
		l := c.LatencyMS
		w("SendCommand:          %d sent at %g/s via %s, ok %d, skipped %d, errors %d%s", c.Sent, c.RatePerSecond, c.Via, c.OK, c.Skipped, sum(c.ErrorsByCode), counts(c.ErrorsByCode))
		w("command latency:      p50 %.2fms p90 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms mean %.2fms (n=%d)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean, l.Count)
	}
	p := r.Process
	w("process:              fds %d/%d, rss %s (baseline %s, %s per connection), go heap %s, stacks %s, goroutines %d (%.1f per connection)",
		p.OpenFDs, p.FDLimit, size(p.RSSBytes), size(p.BaselineRSSBytes), size(p.RSSPerConnectionBytes), size(p.GoHeapBytes), size(p.GoStackBytes), p.Goroutines, p.GoroutinesPerConnection)
	w("shutdown:             %.2fs, clean %v", r.ShutdownSeconds, r.CleanShutdown)
	for _, k := range slices.Sorted(maps.Keys(r.ErrorSamples)) {
		w("first error %-20s %s", k+":", r.ErrorSamples[k])
	}
	return b.String()
}

// counts renders a map as "{a=1,b=2}" (sorted keys), or "" when empty.
func counts(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func size(b int64) string {
	switch {
	case b < 0:
		return "?"
	case b >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%dB", b)
}

func via(c Config) string {
	if c.CommandsHTTP != "" {
		return c.CommandsHTTP + " (JSON gateway)"
	}
	return c.CommandsVia + " (gRPC)"
}
