package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

// jobTests are the contract of registry.Jobs, run for stores that
// implement it.
var jobTests = []contractTest{
	{"JobsAreCreatedWithEveryDevicePendingAndListedNewestFirst", testJobCreate},
	{"JobsBeyondTheRunningLimitAreRefused", testJobLimit},
	{"JobDevicesMoveForwardOnlyAndDispatchOnce", testJobDeviceStates},
	{"JobWritesAreFencedByTheRunnerLease", testJobFencing},
	{"ConcurrentDispatchesOfOneDeviceLeaveExactlyOne", testJobConcurrentDispatch},
	{"EndedJobsExpireAfterTheRetention", testJobRetention},
}

const (
	jdPending    = tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING
	jdDispatched = tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED
	jdSucceeded  = tetherv1.JobDeviceState_JOB_DEVICE_STATE_SUCCEEDED
	jdFailed     = tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED
	jdSkipped    = tetherv1.JobDeviceState_JOB_DEVICE_STATE_SKIPPED_OFFLINE
	jdUnknown    = tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN
	jsRunning    = tetherv1.JobState_JOB_STATE_RUNNING
	jsDone       = tetherv1.JobState_JOB_STATE_DONE
	jsCancelled  = tetherv1.JobState_JOB_STATE_CANCELLED
)

func jobsOf(t *testing.T, st registry.Store) registry.Jobs {
	t.Helper()
	j, ok := st.(registry.Jobs)
	if !ok {
		t.Skip("the store keeps no jobs")
	}
	return j
}

func newJob(t *testing.T, js registry.Jobs, id string, devices []string, maxRunning int) error {
	t.Helper()
	return js.CreateJob(ctxT(t), registry.Job{ID: id, Spec: &tetherv1.JobSpec{Name: "echo", Args: []string{"a"}}, Created: now(), CreatedBy: "k1"}, devices, maxRunning)
}

func allResults(t *testing.T, js registry.Jobs, id string, page int) []*tetherv1.JobDeviceResult {
	t.Helper()
	var out []*tetherv1.JobDeviceResult
	after := ""
	for range 1000 {
		rs, next, err := js.JobResults(ctxT(t), id, after, page)
		if err != nil {
			t.Fatalf("JobResults(%s, %q): %v", id, after, err)
		}
		out = append(out, rs...)
		if next == "" {
			return out
		}
		after = next
	}
	t.Fatal("JobResults never ended")
	return nil
}

func testJobCreate(t *testing.T, h Harness) {
	js := jobsOf(t, h.New(t, Options{}))
	devs := []string{"d3", "d1", "d2", "d1", "d5", "d4"}
	for _, id := range []string{"j1", "j2", "j3"} {
		if err := newJob(t, js, id, devs, 10); err != nil {
			t.Fatal(err)
		}
	}
	j, err := js.GetJob(ctxT(t), "j2")
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != "j2" || j.State != jsRunning || j.Total != 5 || j.Counts[jdPending] != 5 || j.Spec.GetName() != "echo" || j.CreatedBy != "k1" || j.Created.IsZero() {
		t.Fatalf("job = %+v", j)
	}
	if _, err := js.GetJob(ctxT(t), "nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("GetJob of an unknown job: %v", err)
	}
	rs := allResults(t, js, "j2", 2)
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.GetDeviceId())
		if r.GetState() != jdPending {
			t.Fatalf("result %v not pending", r)
		}
	}
	if !slices.Equal(ids, []string{"d1", "d2", "d3", "d4", "d5"}) {
		t.Fatalf("results = %v", ids)
	}
	var listed []string
	before := ""
	for range 10 {
		page, next, err := js.ListJobs(ctxT(t), before, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page {
			listed = append(listed, j.ID)
		}
		if next == "" {
			break
		}
		before = next
	}
	if !slices.Equal(listed, []string{"j3", "j2", "j1"}) {
		t.Fatalf("ListJobs = %v; want newest first", listed)
	}
	running, err := js.RunningJobs(ctxT(t))
	slices.Sort(running)
	if err != nil || !slices.Equal(running, []string{"j1", "j2", "j3"}) {
		t.Fatalf("RunningJobs = %v, %v", running, err)
	}
}

func testJobLimit(t *testing.T, h Harness) {
	js := jobsOf(t, h.New(t, Options{}))
	for i := range 2 {
		if err := newJob(t, js, fmt.Sprint("j", i), []string{"d"}, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := newJob(t, js, "j9", []string{"d"}, 2); !errors.Is(err, registry.ErrJobLimit) {
		t.Fatalf("third job: %v; want ErrJobLimit", err)
	}
	if _, err := js.CancelJob(ctxT(t), "j0", now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := newJob(t, js, "j9", []string{"d"}, 2); err != nil {
		t.Fatalf("a job after one was cancelled: %v", err)
	}
}

func testJobDeviceStates(t *testing.T, h Harness) {
	js := jobsOf(t, h.New(t, Options{}))
	if err := newJob(t, js, "j", []string{"a", "b", "c", "d"}, 10); err != nil {
		t.Fatal(err)
	}
	at := now()
	if _, err := js.AcquireJob(ctxT(t), "j", "n1", at, time.Hour); err != nil {
		t.Fatal(err)
	}
	res := func(id string, s tetherv1.JobDeviceState) *tetherv1.JobDeviceResult {
		return &tetherv1.JobDeviceResult{DeviceId: id, State: s, LeaseId: 7, Node: "n1", Output: "out-" + id}
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("a", jdDispatched), at); err != nil {
		t.Fatal(err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("a", jdDispatched), at); !errors.Is(err, registry.ErrJobDeviceState) {
		t.Fatalf("second dispatch of a: %v; want ErrJobDeviceState", err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("zz", jdDispatched), at); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("dispatch of a device not in the job: %v", err)
	}
	if err := js.CompleteJobDevice(ctxT(t), "j", "n1", res("a", jdSucceeded), at); err != nil {
		t.Fatal(err)
	}
	if err := js.CompleteJobDevice(ctxT(t), "j", "n1", res("a", jdFailed), at); !errors.Is(err, registry.ErrJobDeviceState) {
		t.Fatalf("second completion of a: %v", err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("a", jdDispatched), at); !errors.Is(err, registry.ErrJobDeviceState) {
		t.Fatalf("dispatch of a completed device: %v", err)
	}
	if err := js.CompleteJobDevice(ctxT(t), "j", "n1", res("b", jdSkipped), at); err != nil {
		t.Fatal(err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("c", jdDispatched), at); err != nil {
		t.Fatal(err)
	}
	j, err := js.GetJob(ctxT(t), "j")
	if err != nil {
		t.Fatal(err)
	}
	want := map[tetherv1.JobDeviceState]int{jdSucceeded: 1, jdSkipped: 1, jdDispatched: 1, jdPending: 1}
	for s, n := range want {
		if j.Counts[s] != n {
			t.Fatalf("counts = %v; want %v", j.Counts, want)
		}
	}
	rs := allResults(t, js, "j", 10)
	if len(rs) != 4 || rs[0].GetState() != jdSucceeded || rs[0].GetOutput() != "out-a" || rs[0].GetLeaseId() != 7 ||
		rs[1].GetState() != jdSkipped || rs[2].GetState() != jdDispatched || rs[3].GetState() != jdPending {
		t.Fatalf("results = %v", rs)
	}
	// Cancelled: nothing more is dispatched, the dispatched device still
	// gets its result, and the job cannot be finished.
	cj, err := js.CancelJob(ctxT(t), "j", at, time.Hour)
	if err != nil || cj.State != jsCancelled || cj.Ended.IsZero() {
		t.Fatalf("CancelJob = %+v, %v", cj, err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", res("d", jdDispatched), at); !errors.Is(err, registry.ErrJobEnded) {
		t.Fatalf("dispatch after cancel: %v; want ErrJobEnded", err)
	}
	if err := js.CompleteJobDevice(ctxT(t), "j", "n1", res("c", jdUnknown), at); err != nil {
		t.Fatalf("result of a dispatched device after cancel: %v", err)
	}
	if err := js.FinishJob(ctxT(t), "j", "n1", at, time.Hour); !errors.Is(err, registry.ErrJobEnded) {
		t.Fatalf("finish after cancel: %v", err)
	}
	if _, err := js.AcquireJob(ctxT(t), "j", "n1", at, time.Hour); !errors.Is(err, registry.ErrJobEnded) {
		t.Fatalf("acquire after cancel: %v", err)
	}
	if running, _ := js.RunningJobs(ctxT(t)); len(running) != 0 {
		t.Fatalf("running after cancel: %v", running)
	}
}

func testJobFencing(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	js := jobsOf(t, st)
	other := js
	if h.Replica != nil {
		other = jobsOf(t, h.Replica(t, st))
	}
	if err := newJob(t, js, "j", []string{"a", "b"}, 10); err != nil {
		t.Fatal(err)
	}
	at := now()
	const ttl = time.Minute
	if _, err := js.AcquireJob(ctxT(t), "j", "n1", at, ttl); err != nil {
		t.Fatal(err)
	}
	if j, err := other.AcquireJob(ctxT(t), "j", "n2", at.Add(ttl/2), ttl); !errors.Is(err, registry.ErrJobHeld) || j.Runner != "n1" {
		t.Fatalf("n2 takes a held job: %+v, %v", j, err)
	}
	a := &tetherv1.JobDeviceResult{DeviceId: "a", LeaseId: 3}
	if err := other.DispatchJobDevice(ctxT(t), "j", "n2", a, at); !errors.Is(err, registry.ErrJobHeld) {
		t.Fatalf("dispatch by a runner without the lease: %v", err)
	}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", a, at); err != nil {
		t.Fatal(err)
	}
	// n1's lease lapses (it died): n2 resumes, n1's writes are refused.
	later := at.Add(2 * ttl)
	if j, err := other.AcquireJob(ctxT(t), "j", "n2", later, ttl); err != nil || j.Runner != "n2" {
		t.Fatalf("n2 resumes: %+v, %v", j, err)
	}
	b := &tetherv1.JobDeviceResult{DeviceId: "b", LeaseId: 4}
	if err := js.DispatchJobDevice(ctxT(t), "j", "n1", b, later); !errors.Is(err, registry.ErrJobHeld) {
		t.Fatalf("dispatch by the runner that lost the lease: %v", err)
	}
	if err := js.CompleteJobDevice(ctxT(t), "j", "n1", &tetherv1.JobDeviceResult{DeviceId: "a", State: jdSucceeded}, later); !errors.Is(err, registry.ErrJobHeld) {
		t.Fatalf("completion by the runner that lost the lease: %v", err)
	}
	// The resumed runner finds a dispatched, never re-sends it.
	if err := other.DispatchJobDevice(ctxT(t), "j", "n2", a, later); !errors.Is(err, registry.ErrJobDeviceState) {
		t.Fatalf("resumed runner re-dispatches a: %v", err)
	}
	if err := other.CompleteJobDevice(ctxT(t), "j", "n2", &tetherv1.JobDeviceResult{DeviceId: "a", State: jdUnknown, LeaseId: 3}, later); err != nil {
		t.Fatal(err)
	}
	if err := other.DispatchJobDevice(ctxT(t), "j", "n2", b, later); err != nil {
		t.Fatal(err)
	}
	if err := other.CompleteJobDevice(ctxT(t), "j", "n2", &tetherv1.JobDeviceResult{DeviceId: "b", State: jdSucceeded, LeaseId: 4}, later); err != nil {
		t.Fatal(err)
	}
	if err := js.FinishJob(ctxT(t), "j", "n1", later, time.Hour); !errors.Is(err, registry.ErrJobHeld) {
		t.Fatalf("finish by the runner that lost the lease: %v", err)
	}
	if err := other.FinishJob(ctxT(t), "j", "n2", later, time.Hour); err != nil {
		t.Fatal(err)
	}
	j, err := js.GetJob(ctxT(t), "j")
	if err != nil || j.State != jsDone || j.Counts[jdSucceeded] != 1 || j.Counts[jdUnknown] != 1 || j.Counts[jdPending] != 0 || j.Ended.IsZero() {
		t.Fatalf("finished job = %+v, %v", j, err)
	}
}

func testJobConcurrentDispatch(t *testing.T, h Harness) {
	st := h.New(t, Options{})
	js := jobsOf(t, st)
	if err := newJob(t, js, "j", []string{"a"}, 10); err != nil {
		t.Fatal(err)
	}
	at := now()
	if _, err := js.AcquireJob(ctxT(t), "j", "n1", at, time.Hour); err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := js.DispatchJobDevice(ctxT(t), "j", "n1", &tetherv1.JobDeviceResult{DeviceId: "a", LeaseId: uint64(i + 1)}, at)
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, registry.ErrJobDeviceState) {
				t.Errorf("dispatch: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d dispatches of one device succeeded; want 1", ok)
	}
	if j, _ := js.GetJob(ctxT(t), "j"); j.Counts[jdDispatched] != 1 || j.Counts[jdPending] != 0 {
		t.Fatalf("counts = %v", j.Counts)
	}
}

func testJobRetention(t *testing.T, h Harness) {
	js := jobsOf(t, h.New(t, Options{}))
	if err := newJob(t, js, "j-gone", []string{"a"}, 10); err != nil {
		t.Fatal(err)
	}
	if err := newJob(t, js, "j-kept", []string{"a"}, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CancelJob(ctxT(t), "j-gone", now(), 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cancelled job expires", func() bool {
		_, err := js.GetJob(ctxT(t), "j-gone")
		return errors.Is(err, registry.ErrNotFound)
	})
	if _, _, err := js.JobResults(ctxT(t), "j-gone", "", 10); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("results of an expired job: %v", err)
	}
	page, _, err := js.ListJobs(ctxT(t), "", 10)
	if err != nil || len(page) != 1 || page[0].ID != "j-kept" {
		t.Fatalf("ListJobs after expiry = %+v, %v", page, err)
	}
}
