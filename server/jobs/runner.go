package jobs

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/router"
)

// Runner defaults.
const (
	DefaultLeaseTTL = 15 * time.Second
	DefaultPoll     = 2 * time.Second
	// DefaultMaxLocalJobs bounds the jobs one replica runs at once.
	DefaultMaxLocalJobs = 4
	// resultsBatch is how many results a runner reads per page at start.
	resultsBatch = 1000
)

// Router is what the runner needs of the fleet router.
type Router interface {
	Locate(ctx context.Context, deviceID string) (registry.Record, error)
	At(ctx context.Context, node string, lease uint64, op router.Op) (router.Result, error)
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Node is this replica's node name: the runner lease's holder.
	Node string
	// LeaseTTL is the runner lease; it is renewed every LeaseTTL/3. A
	// job whose runner died is resumed within about LeaseTTL+Poll.
	LeaseTTL time.Duration
	// Poll is how often running jobs are looked for, and how often a job
	// waiting for offline devices checks them again.
	Poll time.Duration
	// MaxLocalJobs bounds the jobs this replica runs at once.
	MaxLocalJobs int
	// Retention is how long a finished job is kept (Config.Retention).
	Retention time.Duration
	Logger    *slog.Logger
	// Registerer, if set, receives the runner's metrics.
	Registerer prometheus.Registerer
}

// Runner runs this replica's share of the running jobs.
type Runner struct {
	cfg    RunnerConfig
	store  registry.Jobs
	router Router
	wake   chan struct{}

	mu      sync.Mutex
	running map[string]bool

	sent     *prometheus.CounterVec
	latency  prometheus.Histogram
	resumed  prometheus.Counter
	active   prometheus.GaugeFunc
	inflight sync.WaitGroup
}

// NewRunner returns a Runner.
func NewRunner(cfg RunnerConfig, store registry.Jobs, rt Router) *Runner {
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.MaxLocalJobs <= 0 {
		cfg.MaxLocalJobs = DefaultMaxLocalJobs
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Runner{cfg: cfg, store: store, router: rt, wake: make(chan struct{}, 1), running: map[string]bool{},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tether_job_devices_total",
			Help: "Devices of jobs this replica ran that reached a final state, by state.",
		}, []string{"state"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tether_job_device_seconds",
			Help:    "Time from recording a job's dispatch to a device to recording its result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		resumed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tether_jobs_resumed_total",
			Help: "Jobs this replica took over (or started) as runner.",
		}),
	}
	r.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tether_jobs_running",
		Help: "Jobs this replica is running now.",
	}, func() float64 { r.mu.Lock(); defer r.mu.Unlock(); return float64(len(r.running)) })
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(r.sent, r.latency, r.resumed, r.active)
	}
	return r
}

// Wake makes the runner look for jobs now.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run looks for running jobs until ctx ends, taking those whose runner
// lease is free; it returns once the jobs it runs have stopped.
func (r *Runner) Run(ctx context.Context) {
	defer r.inflight.Wait()
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

func (r *Runner) scan(ctx context.Context) {
	ids, err := r.store.RunningJobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.cfg.Logger.Warn("jobs: cannot list running jobs", "err", err)
		}
		return
	}
	for _, id := range ids {
		r.mu.Lock()
		busy := r.running[id] || len(r.running) >= r.cfg.MaxLocalJobs
		r.mu.Unlock()
		if busy {
			continue
		}
		j, err := r.store.AcquireJob(ctx, id, r.cfg.Node, time.Now(), r.cfg.LeaseTTL)
		if err != nil {
			continue // held by another runner, ended, or unknown: the next scan retries
		}
		r.mu.Lock()
		r.running[id] = true
		r.mu.Unlock()
		r.resumed.Inc()
		r.inflight.Add(1)
		go func() {
			defer r.inflight.Done()
			defer func() { r.mu.Lock(); delete(r.running, id); r.mu.Unlock() }()
			r.runJob(ctx, j)
		}()
	}
}

// jobRun is one runner's pass over one job.
type jobRun struct {
	r       *Runner
	job     registry.Job
	log     *slog.Logger
	cmd     router.Op
	until   time.Time // the job's wait deadline for offline devices
	lost    context.CancelFunc
	halt    context.Context // ends when the job is cancelled or the lease lost: no more dispatches
	notSent map[string]string
	mu      sync.Mutex
}

func (r *Runner) runJob(ctx context.Context, j registry.Job) {
	log := r.cfg.Logger.With("job", j.ID)
	log.Info("job runner started", "devices", j.Total, "pending", j.Counts[tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING])
	// work: in-flight commands (ends with the replica or the lease);
	// halt: dispatching (ends also when the job is cancelled).
	work, lost := context.WithCancel(ctx)
	defer lost()
	halt, stop := context.WithCancel(work)
	defer stop()
	jr := &jobRun{r: r, job: j, log: log, lost: lost, halt: halt, notSent: map[string]string{}}
	spec := j.Spec
	jr.cmd = router.Op{Command: &tetherv1.SendCommandRequest{Name: spec.GetName(), Args: spec.GetArgs(), Timeout: spec.GetDeviceTimeout()}}
	if spec.GetOfflinePolicy() == tetherv1.OfflinePolicy_OFFLINE_POLICY_WAIT {
		jr.until = j.Created.Add(spec.GetWaitDeadline().AsDuration())
	}
	renewed := make(chan struct{})
	go func() { defer close(renewed); jr.renew(work, stop) }()
	defer func() { lost(); <-renewed }()
	defer func() {
		if ctx.Err() != nil {
			// The replica is stopping: hand the job over at once (a lease
			// that ends now) instead of making the next runner wait out
			// the TTL. Refused harmlessly if the lease is no longer ours.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if _, err := r.store.AcquireJob(hctx, j.ID, r.cfg.Node, time.Now(), 0); err == nil {
				log.Info("job handed over: this replica is stopping")
			}
		}
	}()

	pending, err := jr.load(work)
	if err != nil {
		log.Warn("job runner: cannot read the job's results; another pass retries", "err", err)
		return
	}
	jr.dispatchAll(work, pending)
	if halt.Err() != nil {
		log.Info("job runner stopped", "reason", context.Cause(halt))
		return
	}
	// A result the store did not take (unknown outcome) leaves its device
	// PENDING or DISPATCHED: the job is not done; the next pass (this
	// runner's or a resumed one's) reports or runs those devices.
	if cur, err := r.store.GetJob(work, j.ID); err != nil || cur.Counts[tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING]+cur.Counts[tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED] > 0 {
		log.Warn("job runner: devices left without a recorded result; another pass follows", "err", err)
		return
	}
	err = r.store.FinishJob(work, j.ID, r.cfg.Node, time.Now(), r.cfg.Retention)
	if err != nil && !errors.Is(err, registry.ErrJobEnded) {
		log.Warn("job runner: could not mark the job done; the next runner will", "err", err)
		return
	}
	log.Info("job done")
}

// renew keeps the runner lease; it stops dispatching (stop) when the job
// has ended and stops everything (jr.lost) when the lease is lost.
func (jr *jobRun) renew(ctx context.Context, stop context.CancelFunc) {
	r := jr.r
	held := time.Now().Add(r.cfg.LeaseTTL)
	t := time.NewTicker(r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		at := time.Now()
		_, err := r.store.AcquireJob(ctx, jr.job.ID, r.cfg.Node, at, r.cfg.LeaseTTL)
		switch {
		case err == nil:
			held = at.Add(r.cfg.LeaseTTL)
		case errors.Is(err, registry.ErrJobEnded):
			stop() // cancelled: in-flight commands still record their results
		case errors.Is(err, registry.ErrJobHeld), errors.Is(err, registry.ErrNotFound):
			jr.log.Warn("job runner lost its lease", "err", err)
			jr.lost()
			return
		default:
			if !time.Now().Before(held) {
				jr.log.Warn("job runner could not renew its lease before it lapsed", "err", err)
				jr.lost()
				return
			}
		}
	}
}

// load reads every result: the PENDING devices to run, and the DISPATCHED
// ones a previous runner left behind, which are reported UNKNOWN (never
// sent again).
func (jr *jobRun) load(ctx context.Context) ([]string, error) {
	var pending []string
	after := ""
	for {
		rs, next, err := jr.r.store.JobResults(ctx, jr.job.ID, after, resultsBatch)
		if err != nil {
			return nil, err
		}
		for _, res := range rs {
			switch res.GetState() {
			case tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING:
				pending = append(pending, res.GetDeviceId())
			case tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED:
				res.State = tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN
				res.Error = "the runner that sent the command stopped before its result was recorded; it is not sent again"
				res.CompleteTime = timestamppb.Now()
				jr.complete(ctx, res)
			}
		}
		if next == "" {
			return pending, nil
		}
		after = next
	}
}

// maxCatchUp is how many intervals of lag a job's pacing makes up by
// sending without sleeping: a burst above the job's rate is at most that
// many devices.
const maxCatchUp = 8

// dispatchAll sends the command to pending devices at the job's rate and
// concurrency; devices offline under the WAIT policy are tried again every
// Poll until the wait deadline.
func (jr *jobRun) dispatchAll(work context.Context, pending []string) {
	spec := jr.job.Spec
	interval := time.Duration(float64(time.Second) / spec.GetRate())
	sem := make(chan struct{}, spec.GetConcurrency())
	var wg sync.WaitGroup
	defer wg.Wait()
	var next time.Time
	for len(pending) > 0 {
		var waiting []string
		var wmu sync.Mutex
		for _, id := range pending {
			if d := time.Until(next); d > 0 {
				select {
				case <-jr.halt.Done():
					return
				case <-time.After(d):
				}
			}
			select {
			case <-jr.halt.Done():
				return
			case sem <- struct{}{}:
			}
			// Pacing: one device per interval on average. A sleep wakes a
			// little late, so a lag of up to maxCatchUp intervals is made
			// up by sending without sleeping (otherwise every late wake-up
			// would lower the rate for good); a longer stall (the runner
			// starved, every slot busy) is forgotten, never bursted out.
			now := time.Now()
			if next.IsZero() || now.Sub(next) > maxCatchUp*interval {
				next = now
			}
			next = next.Add(interval)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if jr.device(work, id) {
					wmu.Lock()
					waiting = append(waiting, id)
					wmu.Unlock()
				}
			}()
		}
		wg.Wait()
		pending = waiting
		if len(pending) == 0 {
			return
		}
		select {
		case <-jr.halt.Done():
			return
		case <-time.After(jr.r.cfg.Poll):
		}
	}
}

// device runs the job on one device; it reports true when the device is
// to be tried again later (offline under WAIT, or the registry
// unreachable).
func (jr *jobRun) device(ctx context.Context, id string) (again bool) {
	r := jr.r
	res := &tetherv1.JobDeviceResult{DeviceId: id}
	rec, err := r.router.Locate(ctx, id)
	if err != nil {
		code := status.Code(err)
		if code == codes.Unavailable && rec.DeviceID == "" && ctx.Err() == nil {
			return true // the registry, not the device, is unavailable
		}
		if (code == codes.Unavailable || code == codes.NotFound) && !jr.until.IsZero() && time.Now().Before(jr.until) {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		res.State = tetherv1.JobDeviceState_JOB_DEVICE_STATE_SKIPPED_OFFLINE
		res.Error = status.Convert(err).Message()
		res.CompleteTime = timestamppb.Now()
		jr.complete(ctx, res)
		return false
	}
	if jr.halt.Err() != nil {
		return false
	}
	res.LeaseId, res.Node = rec.Session.Lease, rec.Session.Node
	res.DispatchTime = timestamppb.Now()
	// Record the lease before sending: the one write that makes "never
	// twice" hold across runners.
	switch err := r.store.DispatchJobDevice(ctx, jr.job.ID, r.cfg.Node, res, time.Now()); {
	case err == nil:
	case errors.Is(err, registry.ErrJobDeviceState):
		jr.mu.Lock()
		why, ok := jr.notSent[id]
		jr.mu.Unlock()
		if ok {
			// Our own dispatch record whose outcome was unknown: we never sent.
			res.State, res.Error, res.CompleteTime = tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED, "not sent: "+why, timestamppb.Now()
			jr.complete(ctx, res)
		}
		return false
	case errors.Is(err, registry.ErrJobHeld):
		jr.lost()
		return false
	case errors.Is(err, registry.ErrJobEnded):
		return false
	default:
		// Unknown outcome: the device may now read DISPATCHED. Not sent;
		// tried again (a DISPATCHED answer then means "never sent").
		jr.mu.Lock()
		jr.notSent[id] = "recording the dispatch had an unknown outcome (" + err.Error() + ")"
		jr.mu.Unlock()
		return ctx.Err() == nil
	}
	c := jr.cmd.Command
	op := router.Op{Command: &tetherv1.SendCommandRequest{DeviceId: id, Name: c.GetName(), Args: c.GetArgs(), Timeout: c.GetTimeout()}}
	start := time.Now()
	out, err := r.router.At(ctx, rec.Session.Node, rec.Session.Lease, op)
	res.CompleteTime = timestamppb.Now()
	r.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		res.State, res.Error = failureState(err), status.Convert(err).Message()
	} else {
		c := out.Command
		res.ExitCode, res.Error = c.GetExitCode(), c.GetError()
		res.Output, res.OutputTruncated = c.GetOutput(), c.GetOutputTruncated()
		if len(res.Output) > StoredOutputCap {
			res.Output, res.OutputTruncated = strings.ToValidUTF8(res.Output[:StoredOutputCap], ""), true
		}
		res.State = tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED
		if c.GetExitCode() == 0 && c.GetError() == "" {
			res.State = tetherv1.JobDeviceState_JOB_DEVICE_STATE_SUCCEEDED
		}
	}
	jr.complete(ctx, res)
	return false
}

// failureState classifies a routed command's error: one that certainly
// never reached the session (router.NotDelivered) or was refused before
// delivery is FAILED; anything else may have reached the device and is
// UNKNOWN.
func failureState(err error) tetherv1.JobDeviceState {
	if router.NotDelivered(err) {
		return tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED
	}
	switch status.Code(err) {
	case codes.ResourceExhausted, codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
		return tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED
	}
	return tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN
}

// complete records a final result; a runner that lost its lease stops.
func (jr *jobRun) complete(ctx context.Context, res *tetherv1.JobDeviceResult) {
	// Results are recorded even when the replica is stopping, briefly.
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
	}
	err := jr.r.store.CompleteJobDevice(ctx, jr.job.ID, jr.r.cfg.Node, res, time.Now())
	switch {
	case err == nil:
		jr.r.sent.WithLabelValues(res.GetState().String()).Inc()
	case errors.Is(err, registry.ErrJobHeld):
		jr.lost()
	case errors.Is(err, registry.ErrJobDeviceState):
	default:
		jr.log.Warn("job runner: could not record a device's result; the next runner reports it UNKNOWN", "device", res.GetDeviceId(), "state", res.GetState(), "err", err)
	}
}
