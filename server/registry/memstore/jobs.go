package memstore

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

var _ registry.Jobs = (*Store)(nil)

// jobs holds the jobs (registry.Jobs), under their own lock.
type jobs struct {
	mu   sync.Mutex
	byID map[string]*memJob
}

type memJob struct {
	job     registry.Job
	ids     []string // sorted device ids
	results map[string]*tetherv1.JobDeviceResult
	expires time.Time // zero while running
}

func (j *jobs) get(id string, now time.Time) (*memJob, error) {
	if j.byID == nil {
		j.byID = map[string]*memJob{}
	}
	mj := j.byID[id]
	if mj != nil && !mj.expires.IsZero() && !now.Before(mj.expires) {
		delete(j.byID, id)
		mj = nil
	}
	if mj == nil {
		return nil, fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
	}
	return mj, nil
}

func copyJob(mj *memJob) registry.Job {
	j := mj.job
	j.Spec = proto.Clone(j.Spec).(*tetherv1.JobSpec)
	j.Counts = make(map[tetherv1.JobDeviceState]int, len(mj.job.Counts))
	for k, v := range mj.job.Counts {
		if v != 0 {
			j.Counts[k] = v
		}
	}
	return j
}

// CreateJob implements registry.Jobs.
func (s *Store) CreateJob(ctx context.Context, j registry.Job, devices []string, maxRunning int) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	if s.jobs.byID == nil {
		s.jobs.byID = map[string]*memJob{}
	}
	if _, ok := s.jobs.byID[j.ID]; ok {
		return fmt.Errorf("job %s exists", j.ID)
	}
	running := 0
	for _, mj := range s.jobs.byID {
		if mj.job.State == tetherv1.JobState_JOB_STATE_RUNNING {
			running++
		}
	}
	if running >= maxRunning {
		return registry.ErrJobLimit
	}
	ids := slices.Clone(devices)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	j.Spec = proto.Clone(j.Spec).(*tetherv1.JobSpec)
	j.State = tetherv1.JobState_JOB_STATE_RUNNING
	j.Total = len(ids)
	j.Counts = map[tetherv1.JobDeviceState]int{tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING: len(ids)}
	j.Runner, j.RunnerUntil, j.Ended = "", time.Time{}, time.Time{}
	s.jobs.byID[j.ID] = &memJob{job: j, ids: ids, results: map[string]*tetherv1.JobDeviceResult{}}
	return nil
}

// GetJob implements registry.Jobs.
func (s *Store) GetJob(ctx context.Context, id string) (registry.Job, error) {
	if err := ctx.Err(); err != nil {
		return registry.Job{}, unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.get(id, time.Now())
	if err != nil {
		return registry.Job{}, err
	}
	return copyJob(mj), nil
}

// ListJobs implements registry.Jobs.
func (s *Store) ListJobs(ctx context.Context, before string, limit int) ([]registry.Job, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	now := time.Now()
	var ids []string
	for id := range s.jobs.byID {
		if _, err := s.jobs.get(id, now); err == nil && (before == "" || id < before) {
			ids = append(ids, id)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	out := make([]registry.Job, 0, len(ids))
	for _, id := range ids {
		out = append(out, copyJob(s.jobs.byID[id]))
	}
	return out, next, nil
}

// JobResults implements registry.Jobs.
func (s *Store) JobResults(ctx context.Context, id, after string, limit int) ([]*tetherv1.JobDeviceResult, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.get(id, time.Now())
	if err != nil {
		return nil, "", err
	}
	i, _ := slices.BinarySearch(mj.ids, after)
	if i < len(mj.ids) && mj.ids[i] == after {
		i++
	}
	end := min(i+limit, len(mj.ids))
	out := make([]*tetherv1.JobDeviceResult, 0, end-i)
	for _, d := range mj.ids[i:end] {
		if r, ok := mj.results[d]; ok {
			out = append(out, proto.Clone(r).(*tetherv1.JobDeviceResult))
		} else {
			out = append(out, &tetherv1.JobDeviceResult{DeviceId: d, State: tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING})
		}
	}
	next := ""
	if end < len(mj.ids) && end > i {
		next = mj.ids[end-1]
	}
	return out, next, nil
}

// RunningJobs implements registry.Jobs.
func (s *Store) RunningJobs(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	var ids []string
	for id, mj := range s.jobs.byID {
		if mj.job.State == tetherv1.JobState_JOB_STATE_RUNNING {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// AcquireJob implements registry.Jobs.
func (s *Store) AcquireJob(ctx context.Context, id, runner string, now time.Time, ttl time.Duration) (registry.Job, error) {
	if err := ctx.Err(); err != nil {
		return registry.Job{}, unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.get(id, time.Now())
	if err != nil {
		return registry.Job{}, err
	}
	if mj.job.State != tetherv1.JobState_JOB_STATE_RUNNING {
		return copyJob(mj), registry.ErrJobEnded
	}
	if mj.job.Runner != "" && mj.job.Runner != runner && now.Before(mj.job.RunnerUntil) {
		return copyJob(mj), registry.ErrJobHeld
	}
	mj.job.Runner, mj.job.RunnerUntil = runner, now.Add(ttl)
	return copyJob(mj), nil
}

// heldLocked checks that runner holds mj's lease at now.
// running returns job id when runner holds its lease and it is still
// running (j.mu held).
func (j *jobs) running(id, runner string, now time.Time) (*memJob, error) {
	mj, err := j.get(id, time.Now())
	if err != nil {
		return nil, err
	}
	if err := heldLocked(mj, runner, now); err != nil {
		return nil, err
	}
	if mj.job.State != tetherv1.JobState_JOB_STATE_RUNNING {
		return nil, registry.ErrJobEnded
	}
	return mj, nil
}

func heldLocked(mj *memJob, runner string, now time.Time) error {
	if mj.job.Runner != runner || !now.Before(mj.job.RunnerUntil) {
		return registry.ErrJobHeld
	}
	return nil
}

func (mj *memJob) stateOf(device string) (tetherv1.JobDeviceState, bool) {
	if _, ok := slices.BinarySearch(mj.ids, device); !ok {
		return 0, false
	}
	if r, ok := mj.results[device]; ok {
		return r.GetState(), true
	}
	return tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING, true
}

// DispatchJobDevice implements registry.Jobs.
func (s *Store) DispatchJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.running(id, runner, now)
	if err != nil {
		return err
	}
	st, ok := mj.stateOf(r.GetDeviceId())
	if !ok {
		return fmt.Errorf("job %s device %s: %w", id, r.GetDeviceId(), registry.ErrNotFound)
	}
	if st != tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING {
		return registry.ErrJobDeviceState
	}
	c := proto.Clone(r).(*tetherv1.JobDeviceResult)
	c.State = tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED
	mj.results[r.GetDeviceId()] = c
	mj.job.Counts[st]--
	mj.job.Counts[c.State]++
	return nil
}

// CompleteJobDevice implements registry.Jobs.
func (s *Store) CompleteJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	if !registry.FinalJobDeviceState(r.GetState()) {
		return fmt.Errorf("job %s device %s: %v is not a final state", id, r.GetDeviceId(), r.GetState())
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.get(id, time.Now())
	if err != nil {
		return err
	}
	if err := heldLocked(mj, runner, now); err != nil {
		return err
	}
	st, ok := mj.stateOf(r.GetDeviceId())
	if !ok {
		return fmt.Errorf("job %s device %s: %w", id, r.GetDeviceId(), registry.ErrNotFound)
	}
	if registry.FinalJobDeviceState(st) {
		return registry.ErrJobDeviceState
	}
	mj.results[r.GetDeviceId()] = proto.Clone(r).(*tetherv1.JobDeviceResult)
	mj.job.Counts[st]--
	mj.job.Counts[r.GetState()]++
	return nil
}

// FinishJob implements registry.Jobs.
func (s *Store) FinishJob(ctx context.Context, id, runner string, now time.Time, retention time.Duration) error {
	if err := ctx.Err(); err != nil {
		return unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.running(id, runner, now)
	if err != nil {
		return err
	}
	mj.job.State, mj.job.Ended, mj.job.Runner = tetherv1.JobState_JOB_STATE_DONE, now, ""
	mj.expires = time.Now().Add(retention)
	return nil
}

// CancelJob implements registry.Jobs.
func (s *Store) CancelJob(ctx context.Context, id string, now time.Time, retention time.Duration) (registry.Job, error) {
	if err := ctx.Err(); err != nil {
		return registry.Job{}, unknown(err)
	}
	s.jobs.mu.Lock()
	defer s.jobs.mu.Unlock()
	mj, err := s.jobs.get(id, time.Now())
	if err != nil {
		return registry.Job{}, err
	}
	if mj.job.State == tetherv1.JobState_JOB_STATE_RUNNING {
		mj.job.State, mj.job.Ended = tetherv1.JobState_JOB_STATE_CANCELLED, now
		mj.expires = time.Now().Add(retention)
	}
	return copyJob(mj), nil
}
