package jobs_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/fakeagent"
	"github.com/tetherhq/tether/server/jobs"
	"github.com/tetherhq/tether/server/metrics"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/memstore"
	"github.com/tetherhq/tether/server/router"
	"github.com/tetherhq/tether/server/session"
)

// fixture is one replica (hub, router, job service) on an in-memory
// store, with scripted agents over bufconn; it runs inside a synctest
// bubble, so rates and leases run on the fake clock.
type fixture struct {
	store  *memstore.Store
	hub    *session.Hub
	router *router.Router
	svc    *jobs.Service
	agents tetherv1.AgentServiceClient

	mu   sync.Mutex
	got  map[string]int // commands received per device
	stop []func()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: memstore.New(memstore.Options{}), got: map[string]int{}}
	m := metrics.New(nil)
	hub, err := session.NewHub(session.Config{Node: "n1"}, f.store, m)
	if err != nil {
		t.Fatal(err)
	}
	f.hub = hub
	f.router = router.New(router.Config{Hub: hub, Registry: f.store, Metrics: m})
	f.svc = jobs.NewService(jobs.Config{}, f.store)
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.Creds(session.TrackConns(insecure.NewCredentials())))
	tetherv1.RegisterAgentServiceServer(srv, hub)
	go srv.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f.agents = tetherv1.NewAgentServiceClient(conn)
	ctx, stop := context.WithCancel(context.Background())
	hub.Register(ctx, "n1-addr")
	mirrored := make(chan struct{})
	go func() { hub.Mirror(ctx, "n1-addr"); close(mirrored) }()
	t.Cleanup(func() {
		for _, s := range f.stop {
			s()
		}
		stop()
		<-mirrored
		conn.Close()
		srv.Stop()
	})
	return f
}

// runner starts a runner for node until the test ends; the function it
// returns stops it sooner.
func (f *fixture) runner(t *testing.T, node string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	r := jobs.NewRunner(jobs.RunnerConfig{Node: node, LeaseTTL: 15 * time.Second, Poll: time.Second}, f.store, f.router)
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	f.stop = append(f.stop, stop)
	return stop
}

// agent connects a scripted agent answering every command after delay.
func (f *fixture) agent(t *testing.T, id string, labels map[string]string, delay time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.agents.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
		DeviceId: id, AgentVersion: "t", Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
		Info: &tetherv1.DeviceInfo{Hostname: id, Labels: labels},
	}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetHelloAck() == nil {
		t.Fatalf("hello: %v %v", m, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fakeagent.Serve(stream, func(*tetherv1.Command) (string, time.Duration, bool) {
			f.mu.Lock()
			f.got[id]++
			f.mu.Unlock()
			return "ok " + id, delay, true
		})
	}()
	f.stop = append(f.stop, func() { cancel(); <-done })
}

func (f *fixture) commands(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[id]
}

func (f *fixture) create(t *testing.T, spec *tetherv1.JobSpec) *tetherv1.Job {
	t.Helper()
	resp, err := f.svc.CreateJob(context.Background(), &tetherv1.CreateJobRequest{Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetJob()
}

// waitEnded waits (on the fake clock) until the job is no longer RUNNING.
func (f *fixture) waitEnded(t *testing.T, id string, within time.Duration) *tetherv1.Job {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		j, err := f.svc.GetJob(context.Background(), &tetherv1.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		if j.GetJob().GetState() != tetherv1.JobState_JOB_STATE_RUNNING {
			return j.GetJob()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("job %s still running after %v", id, within)
	return nil
}

func (f *fixture) results(t *testing.T, id string) map[string]*tetherv1.JobDeviceResult {
	t.Helper()
	out := map[string]*tetherv1.JobDeviceResult{}
	tok := ""
	for {
		resp, err := f.svc.ListJobResults(context.Background(), &tetherv1.ListJobResultsRequest{JobId: id, PageSize: 7, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetResults() {
			out[r.GetDeviceId()] = r
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return out
		}
	}
}

var fleet = map[string]string{"fleet": "a"}

func devices(n int) []string {
	var ids []string
	for i := range n {
		ids = append(ids, "d"+string(rune('a'+i/26))+string(rune('a'+i%26)))
	}
	return ids
}

func TestAJobRunsEveryDeviceOnceAtItsRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ids := devices(20)
		for _, id := range ids {
			f.agent(t, id, fleet, 50*time.Millisecond)
		}
		f.agent(t, "other", map[string]string{"fleet": "b"}, 0)
		f.runner(t, "n1")
		const rate = 5.0
		j := f.create(t, &tetherv1.JobSpec{Name: "echo", Args: []string{"x"}, Rate: rate, Concurrency: 4,
			Target: &tetherv1.JobTarget{LabelSelector: "fleet=a", DeviceIds: []string{"never-seen"}}})
		if j.GetTotal() != 21 || j.GetState() != tetherv1.JobState_JOB_STATE_RUNNING {
			t.Fatalf("created job = %v", j)
		}
		j = f.waitEnded(t, j.GetJobId(), time.Minute)
		p := j.GetProgress()
		if j.GetState() != tetherv1.JobState_JOB_STATE_DONE || p.GetSucceeded() != 20 || p.GetSkippedOffline() != 1 || p.GetPending()+p.GetDispatched()+p.GetFailed()+p.GetUnknown() != 0 {
			t.Fatalf("ended job = %v", j)
		}
		rs := f.results(t, j.GetJobId())
		var sent []time.Time
		for _, id := range ids {
			if n := f.commands(id); n != 1 {
				t.Errorf("%s got %d commands; want 1", id, n)
			}
			r := rs[id]
			if r.GetState() != tetherv1.JobDeviceState_JOB_DEVICE_STATE_SUCCEEDED || r.GetOutput() != "ok "+id || r.GetLeaseId() == 0 || r.GetNode() != "n1" {
				t.Errorf("result of %s = %v", id, r)
			}
			sent = append(sent, r.GetDispatchTime().AsTime())
		}
		if f.commands("other") != 0 {
			t.Error("a device outside the target got the command")
		}
		if r := rs["never-seen"]; r.GetState() != tetherv1.JobDeviceState_JOB_DEVICE_STATE_SKIPPED_OFFLINE || r.GetError() == "" {
			t.Errorf("never-seen = %v", r)
		}
		// The rate held: 21 devices (one skipped) at 5/s take at least 4 s
		// of the fake clock from the first dispatch to the last.
		slices.SortFunc(sent, func(a, b time.Time) int { return a.Compare(b) })
		if span := sent[len(sent)-1].Sub(sent[0]); span < time.Duration(float64(len(ids)-1)/rate*float64(time.Second))-time.Second/rate || span > 6*time.Second {
			t.Errorf("20 dispatches at %v/s spanned %v", rate, span)
		}
	})
}

func TestAResumedJobNeverResendsADispatchedDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ids := devices(5)
		for _, id := range ids {
			f.agent(t, id, fleet, 0)
		}
		j := f.create(t, &tetherv1.JobSpec{Name: "echo", Rate: 100, Target: &tetherv1.JobTarget{LabelSelector: "fleet=a"}})
		// A runner on "dead" took the job and recorded a dispatch to da,
		// then died before sending or recording the outcome.
		ctx := context.Background()
		if _, err := f.store.AcquireJob(ctx, j.GetJobId(), "dead", time.Now(), 15*time.Second); err != nil {
			t.Fatal(err)
		}
		rec, err := f.store.Get(ctx, ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := f.store.DispatchJobDevice(ctx, j.GetJobId(), "dead", &tetherv1.JobDeviceResult{DeviceId: ids[0], LeaseId: rec.Session.Lease, Node: "n1"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		f.runner(t, "n1")
		j = f.waitEnded(t, j.GetJobId(), time.Minute)
		if took := time.Since(start); took < 15*time.Second {
			t.Errorf("the job was resumed after %v, before the dead runner's lease lapsed", took)
		}
		if p := j.GetProgress(); p.GetUnknown() != 1 || p.GetSucceeded() != 4 {
			t.Fatalf("progress = %v", p)
		}
		if n := f.commands(ids[0]); n != 0 {
			t.Fatalf("%s got %d commands after the resume; want 0 (dispatched before)", ids[0], n)
		}
		r := f.results(t, j.GetJobId())[ids[0]]
		if r.GetState() != tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN || r.GetLeaseId() != rec.Session.Lease {
			t.Fatalf("result of %s = %v", ids[0], r)
		}
		for _, id := range ids[1:] {
			if n := f.commands(id); n != 1 {
				t.Errorf("%s got %d commands", id, n)
			}
		}
	})
}

func TestAStoppingRunnerHandsItsJobOverAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ids := devices(10)
		for _, id := range ids {
			f.agent(t, id, fleet, 0)
		}
		stop := f.runner(t, "n1")
		j := f.create(t, &tetherv1.JobSpec{Name: "echo", Rate: 1, Concurrency: 1, Target: &tetherv1.JobTarget{LabelSelector: "fleet=a"}})
		time.Sleep(3500 * time.Millisecond)
		stop() // n1 drains
		f.runner(t, "n2")
		j = f.waitEnded(t, j.GetJobId(), time.Minute)
		// Handed over: n2 took the job within its poll, not after n1's
		// 15 s lease; the last 6 or so devices take 6 s at 1/s.
		if took := j.GetEndTime().AsTime().Sub(j.GetCreateTime().AsTime()); took >= 15*time.Second {
			t.Fatalf("the job ended %v after creation; n2 waited out n1's lease", took)
		}
		if p := j.GetProgress(); p.GetSucceeded()+p.GetUnknown() != 10 {
			t.Fatalf("progress = %v", p)
		}
		for _, id := range ids {
			if n := f.commands(id); n > 1 {
				t.Errorf("%s got %d commands", id, n)
			}
		}
	})
}

func TestCancelStopsSendingAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ids := devices(10)
		for _, id := range ids {
			f.agent(t, id, fleet, 0)
		}
		f.runner(t, "n1")
		j := f.create(t, &tetherv1.JobSpec{Name: "echo", Rate: 1, Concurrency: 1, Target: &tetherv1.JobTarget{LabelSelector: "fleet=a"}})
		time.Sleep(3500 * time.Millisecond)
		resp, err := f.svc.CancelJob(context.Background(), &tetherv1.CancelJobRequest{JobId: j.GetJobId()})
		if err != nil || resp.GetJob().GetState() != tetherv1.JobState_JOB_STATE_CANCELLED {
			t.Fatalf("cancel: %v %v", resp, err)
		}
		time.Sleep(20 * time.Second)
		total := 0
		for _, id := range ids {
			total += f.commands(id)
		}
		if total < 3 || total > 5 {
			t.Fatalf("%d commands sent; want those of the first ~3.5 s at 1/s", total)
		}
		g, _ := f.svc.GetJob(context.Background(), &tetherv1.GetJobRequest{JobId: j.GetJobId()})
		if p := g.GetJob().GetProgress(); int(p.GetSucceeded()) != total || int(p.GetPending()) != 10-total {
			t.Fatalf("progress after cancel = %v (sent %d)", p, total)
		}
	})
}

func TestOfflineDevicesAreWaitedForUntilTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		f.agent(t, "early", fleet, 0)
		f.runner(t, "n1")
		j := f.create(t, &tetherv1.JobSpec{Name: "echo", Rate: 10,
			Target:        &tetherv1.JobTarget{DeviceIds: []string{"early", "late", "never"}},
			OfflinePolicy: tetherv1.OfflinePolicy_OFFLINE_POLICY_WAIT, WaitDeadline: durationpb.New(30 * time.Second)})
		time.Sleep(5 * time.Second)
		f.agent(t, "late", fleet, 0)
		j = f.waitEnded(t, j.GetJobId(), time.Minute)
		if p := j.GetProgress(); p.GetSucceeded() != 2 || p.GetSkippedOffline() != 1 {
			t.Fatalf("progress = %v", p)
		}
		if end := j.GetEndTime().AsTime().Sub(j.GetCreateTime().AsTime()); end < 30*time.Second {
			t.Fatalf("the job ended %v after creation, before the wait deadline", end)
		}
		if f.commands("late") != 1 {
			t.Fatal("late device never got the command")
		}
	})
}

func TestBadRequestsAreInvalidArgument(t *testing.T) {
	store := memstore.New(memstore.Options{})
	svc := jobs.NewService(jobs.Config{}, store)
	ctx := context.Background()
	target := &tetherv1.JobTarget{DeviceIds: []string{"d1"}}
	for name, spec := range map[string]*tetherv1.JobSpec{
		"no spec":           nil,
		"no name":           {Target: target},
		"bad name":          {Name: "a b", Target: target},
		"no target":         {Name: "echo"},
		"bad selector":      {Name: "echo", Target: &tetherv1.JobTarget{LabelSelector: "=="}},
		"bad id":            {Name: "echo", Target: &tetherv1.JobTarget{DeviceIds: []string{"a/b"}}},
		"negative rate":     {Name: "echo", Target: target, Rate: -1},
		"huge rate":         {Name: "echo", Target: target, Rate: 1e9},
		"huge concurrency":  {Name: "echo", Target: target, Concurrency: 1 << 20},
		"long timeout":      {Name: "echo", Target: target, DeviceTimeout: durationpb.New(time.Hour)},
		"wait, no deadline": {Name: "echo", Target: target, OfflinePolicy: tetherv1.OfflinePolicy_OFFLINE_POLICY_WAIT},
		"deadline, no wait": {Name: "echo", Target: target, WaitDeadline: durationpb.New(time.Minute)},
		"unknown policy":    {Name: "echo", Target: target, OfflinePolicy: 9},
	} {
		if _, err := svc.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: spec}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want INVALID_ARGUMENT", name, err)
		}
	}
	for name, err := range map[string]error{
		"get bad id": func() error { _, err := svc.GetJob(ctx, &tetherv1.GetJobRequest{JobId: "A/B"}); return err }(),
		"results bad token": func() error {
			_, err := svc.ListJobResults(ctx, &tetherv1.ListJobResultsRequest{JobId: "j", PageToken: "!!"})
			return err
		}(),
		"list negative": func() error { _, err := svc.ListJobs(ctx, &tetherv1.ListJobsRequest{PageSize: -1}); return err }(),
		"cancel empty":  func() error { _, err := svc.CancelJob(ctx, &tetherv1.CancelJobRequest{}); return err }(),
	} {
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := svc.GetJob(ctx, &tetherv1.GetJobRequest{JobId: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown job: %v", err)
	}
	// A target selecting nothing, or more than the job size limit.
	if _, err := svc.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: &tetherv1.JobSpec{Name: "echo", Target: &tetherv1.JobTarget{LabelSelector: "x=y"}}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("empty target: %v", err)
	}
	small := jobs.NewService(jobs.Config{MaxJobDevices: 2}, store)
	if _, err := small.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: &tetherv1.JobSpec{Name: "echo", Target: &tetherv1.JobTarget{DeviceIds: []string{"a", "b", "c"}}}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("target over the limit: %v", err)
	}
	// The running-jobs limit.
	one := jobs.NewService(jobs.Config{MaxRunningJobs: 1}, store)
	spec := &tetherv1.JobSpec{Name: "echo", Target: &tetherv1.JobTarget{DeviceIds: []string{"a"}}}
	if _, err := one.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := one.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: spec}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second job over the limit: %v", err)
	}
}

var _ registry.Jobs = (*memstore.Store)(nil)
