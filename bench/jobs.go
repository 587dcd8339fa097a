package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/internal/fakeagent"
)

var (
	jobsN    = flag.Int("jobs-devices", 10000, "devices of the jobs scenario (two replicas sharing Redis)")
	jobsRate = flag.Float64("jobs-rate", 500, "rate (devices per second) asked of the job in the jobs scenario")
	jobsConc = flag.Int("jobs-concurrency", 64, "concurrency asked of the job in the jobs scenario")
)

// jobAgents are the jobs scenario's devices: one gRPC connection and
// session each, run by this process so that every command a device
// receives is counted.
type jobAgents struct {
	mu   sync.Mutex
	got  map[string]int // commands received per device
	live atomic.Int64
}

func (a *jobAgents) run(ctx context.Context, addr, id string, ready func()) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithReadBufferSize(8<<10), grpc.WithWriteBufferSize(8<<10))
	if err != nil {
		ready()
		return
	}
	defer conn.Close()
	stream, err := tetherv1.NewAgentServiceClient(conn).Connect(ctx)
	if err == nil {
		err = stream.Send(&tetherv1.ConnectRequest{Msg: &tetherv1.ConnectRequest_Hello{Hello: &tetherv1.Hello{
			DeviceId: id, AgentVersion: "bench", Capabilities: []tetherv1.Capability{tetherv1.Capability_CAPABILITY_PONG},
			Info: &tetherv1.DeviceInfo{Hostname: id, BootId: "b", Labels: map[string]string{"bench": "jobs"}},
		}}})
	}
	var ack *tetherv1.ConnectResponse
	if err == nil {
		ack, err = stream.Recv()
	}
	ready()
	if err != nil || ack.GetHelloAck() == nil {
		return
	}
	a.live.Add(1)
	defer a.live.Add(-1)
	fakeagent.Serve(stream, func(*tetherv1.Command) (string, time.Duration, bool) {
		a.mu.Lock()
		a.got[id]++
		a.mu.Unlock()
		return "ok", 0, true
	})
}

// jobsScenario: one job over -jobs-devices devices held by two replicas
// sharing Redis, at -jobs-rate.
func jobsScenario() {
	n := *jobsN
	logf("scenario jobs: %d devices on 2 replicas, job at %.0f/s", n, *jobsRate)
	defer stopAll()
	redisAddr, _ := startRedis()
	rs := startReplicas(2, redisAddr, "--max-job-devices", fmt.Sprint(max(n, 20000)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agents := &jobAgents{got: map[string]int{}}
	var ready, done sync.WaitGroup
	sem := make(chan struct{}, 100)
	for i := range n {
		sem <- struct{}{}
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			agents.run(ctx, rs[i%2].grpc, fmt.Sprintf("job-%05d", i), func() { ready.Done(); <-sem })
		}()
	}
	ready.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	for sessions(rs) < n && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	held := sessions(rs)
	logf("%d sessions held (%d agents live); settling 10 s", held, agents.live.Load())
	time.Sleep(10 * time.Second)

	conn, err := grpc.NewClient(rs[0].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(err)
	defer conn.Close()
	api := tetherv1.NewJobServiceClient(conn)
	created := time.Now()
	resp, err := api.CreateJob(ctx, &tetherv1.CreateJobRequest{Spec: &tetherv1.JobSpec{Name: "echo", Args: []string{"job"},
		Target: &tetherv1.JobTarget{LabelSelector: "bench=jobs"}, Rate: *jobsRate, Concurrency: int32(*jobsConc),
		DeviceTimeout: durationpb.New(10 * time.Second)}})
	must(err)
	createTook := time.Since(created)
	id := resp.GetJob().GetJobId()
	logf("job %s: %d devices (create took %v)", id, resp.GetJob().GetTotal(), createTook)
	var job *tetherv1.Job
	runners := map[string]bool{}
	limit := time.Now().Add(time.Duration(float64(n)/(*jobsRate)*float64(time.Second))*3 + time.Minute)
	for time.Now().Before(limit) {
		g, err := api.GetJob(ctx, &tetherv1.GetJobRequest{JobId: id})
		must(err)
		job = g.GetJob()
		if job.GetRunner() != "" {
			runners[job.GetRunner()] = true
		}
		if job.GetState() != tetherv1.JobState_JOB_STATE_RUNNING {
			break
		}
		time.Sleep(time.Second)
	}
	// Every result.
	var dispatch []time.Time
	var lat []time.Duration
	states := map[string]int{}
	tok := ""
	for {
		page, err := api.ListJobResults(ctx, &tetherv1.ListJobResultsRequest{JobId: id, PageSize: 1000, PageToken: tok})
		must(err)
		for _, r := range page.GetResults() {
			states[r.GetState().String()]++
			if r.GetDispatchTime() != nil {
				dispatch = append(dispatch, r.GetDispatchTime().AsTime())
				if r.GetCompleteTime() != nil {
					lat = append(lat, r.GetCompleteTime().AsTime().Sub(r.GetDispatchTime().AsTime()))
				}
			}
		}
		if tok = page.GetNextPageToken(); tok == "" {
			break
		}
	}
	slices.SortFunc(dispatch, func(a, b time.Time) int { return a.Compare(b) })
	span := time.Duration(0)
	if len(dispatch) > 1 {
		span = dispatch[len(dispatch)-1].Sub(dispatch[0])
	}
	// The busiest second: most dispatches within any 1 s window.
	peak := 0
	for i, j := 0, 0; j < len(dispatch); j++ {
		for dispatch[j].Sub(dispatch[i]) >= time.Second {
			i++
		}
		peak = max(peak, j-i+1)
	}
	agents.mu.Lock()
	once, twice, never := 0, 0, 0
	for i := range n {
		switch c := agents.got[fmt.Sprintf("job-%05d", i)]; {
		case c == 1:
			once++
		case c > 1:
			twice++
		default:
			never++
		}
	}
	agents.mu.Unlock()
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))]
	}
	achieved := 0.0
	if span > 0 {
		achieved = float64(len(dispatch)-1) / span.Seconds()
	}
	fmt.Println("## Jobs: one command for 10,000 devices")
	fmt.Println()
	fmt.Printf("Command: `flock /tmp/tether-heavy.lock go run ./bench -scenarios jobs` — two replicas sharing Redis hold %d sessions (half each, one gRPC connection per device from the bench process, which counts every command each device receives); one job (`echo`, target `bench=jobs`, rate %.0f/s, concurrency %d) is created on replica 1 and run by whichever replica takes its runner lease, through the fleet router (commands for devices on the other replica go over `PeerService.Invoke`).\n\n", held, *jobsRate, *jobsConc)
	fmt.Println("| what | measured |")
	fmt.Println("|---|---|")
	fmt.Printf("| devices targeted | %d |\n", resp.GetJob().GetTotal())
	fmt.Printf("| job state at the end | %s (runner(s) seen: %d) |\n", job.GetState(), len(runners))
	fmt.Printf("| results by state | %v |\n", states)
	fmt.Printf("| CreateJob (resolving the selector, storing %d devices) | %v |\n", resp.GetJob().GetTotal(), createTook.Round(time.Millisecond))
	fmt.Printf("| rate asked / achieved over the run (first to last dispatch) | %.0f/s / %.1f/s over %v |\n", *jobsRate, achieved, span.Round(time.Millisecond))
	fmt.Printf("| busiest 1 s window | %d dispatches |\n", peak)
	fmt.Printf("| devices that received the command exactly once / more than once / never | %d / %d / %d |\n", once, twice, never)
	fmt.Printf("| per-device latency (dispatch recorded → result recorded) p50 / p99 / max | %v / %v / %v |\n",
		p(0.5).Round(10*time.Microsecond), p(0.99).Round(10*time.Microsecond), p(1).Round(10*time.Microsecond))
	fmt.Println()
	addTarget("job over 10,000 devices: every device exactly once", "10,000 once, 0 twice", fmt.Sprintf("%d once, %d twice, %d never", once, twice, never), once == n && twice == 0)
	addTarget("job rate held", fmt.Sprintf("≤ %.0f/s", *jobsRate), fmt.Sprintf("%.1f/s average, busiest second %d", achieved, peak), achieved <= *jobsRate*1.02 && float64(peak) <= *jobsRate*1.05+1)
	cancel()
	done.Wait()
}
