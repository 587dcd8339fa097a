package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
)

var _ registry.Jobs = (*Store)(nil)

var (
	//go:embed scripts/job_create.lua
	jobCreateSrc string
	//go:embed scripts/job_acquire.lua
	jobAcquireSrc string
	//go:embed scripts/job_device.lua
	jobDeviceSrc string
	//go:embed scripts/job_end.lua
	jobEndSrc string

	jobCreateScript  = redis.NewScript(jobCreateSrc)
	jobAcquireScript = redis.NewScript(jobAcquireSrc)
	jobDeviceScript  = redis.NewScript(jobDeviceSrc)
	jobEndScript     = redis.NewScript(jobEndSrc)
)

// Job keys. Every key of every job carries the one hash tag {jobs}: the
// scripts that create and end a job touch the job's keys and the shared
// index and running set, so all of them live in one Cluster slot (jobs are
// few and small next to devices).
func (s *Store) jobsIndexKey() string          { return s.prefix + ":{jobs}:index" }
func (s *Store) jobsRunningKey() string        { return s.prefix + ":{jobs}:running" }
func (s *Store) jobKey(id string) string       { return s.prefix + ":{jobs}:j:" + id }
func (s *Store) jobIDsKey(id string) string    { return s.jobKey(id) + ":ids" }
func (s *Store) jobStatesKey(id string) string { return s.jobKey(id) + ":st" }
func (s *Store) jobResKey(id string) string    { return s.jobKey(id) + ":res" }

func (s *Store) jobKeys(id string) []string {
	return []string{s.jobKey(id), s.jobIDsKey(id), s.jobStatesKey(id), s.jobResKey(id)}
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// CreateJob implements registry.Jobs: one script.
func (s *Store) CreateJob(ctx context.Context, j registry.Job, devices []string, maxRunning int) error {
	spec, err := proto.Marshal(j.Spec)
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	args := make([]any, 0, 5+len(devices))
	args = append(args, j.ID, spec, ms(j.Created), j.CreatedBy, maxRunning)
	for _, d := range devices {
		args = append(args, d)
	}
	n, err := jobCreateScript.Run(ctx, s.rdb, []string{s.jobKey(j.ID), s.jobIDsKey(j.ID), s.jobsIndexKey(), s.jobsRunningKey()}, args...).Int()
	if err != nil {
		return unavailable("create job", err)
	}
	switch n {
	case 1:
		return nil
	case 0:
		return registry.ErrJobLimit
	}
	return fmt.Errorf("create job %s: the id exists", j.ID)
}

func parseJob(h map[string]string) (registry.Job, error) {
	j := registry.Job{ID: h["id"], CreatedBy: h["by"], Runner: h["runner"], Counts: map[tetherv1.JobDeviceState]int{}}
	j.Spec = &tetherv1.JobSpec{}
	if err := proto.Unmarshal([]byte(h["spec"]), j.Spec); err != nil {
		return registry.Job{}, fmt.Errorf("job %s: spec: %w", j.ID, err)
	}
	st, _ := strconv.Atoi(h["state"])
	j.State = tetherv1.JobState(st)
	j.Total, _ = strconv.Atoi(h["total"])
	if v, err := strconv.ParseInt(h["created"], 10, 64); err == nil {
		j.Created = time.UnixMilli(v)
	}
	if v, err := strconv.ParseInt(h["ended"], 10, 64); err == nil {
		j.Ended = time.UnixMilli(v)
	}
	if v, err := strconv.ParseInt(h["until"], 10, 64); err == nil && v > 0 {
		j.RunnerUntil = time.UnixMilli(v)
	}
	for s := range tetherv1.JobDeviceState_name {
		if n, _ := strconv.Atoi(h["c"+strconv.Itoa(int(s))]); n != 0 {
			j.Counts[tetherv1.JobDeviceState(s)] = n
		}
	}
	return j, nil
}

// GetJob implements registry.Jobs: one HGETALL.
func (s *Store) GetJob(ctx context.Context, id string) (registry.Job, error) {
	h, err := s.c.read.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return registry.Job{}, unavailable("get job", err)
	}
	if len(h) == 0 {
		return registry.Job{}, fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
	}
	return parseJob(h)
}

// ListJobs implements registry.Jobs: ZREVRANGEBYLEX of the index, then one
// pipeline of HGETALL; index entries of expired jobs are removed.
func (s *Store) ListJobs(ctx context.Context, before string, limit int) ([]registry.Job, string, error) {
	max := "+"
	if before != "" {
		max = "(" + before
	}
	ids, err := s.c.read.ZRevRangeByLex(ctx, s.jobsIndexKey(), &redis.ZRangeBy{Min: "-", Max: max, Count: int64(limit)}).Result()
	if err != nil {
		return nil, "", unavailable("list jobs", err)
	}
	pipe := s.c.read.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.jobKey(id))
	}
	if len(ids) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	var out []registry.Job
	var gone []any
	for i, c := range cmds {
		h, err := c.Result()
		if err != nil {
			return nil, "", unavailable("list jobs", err)
		}
		if len(h) == 0 {
			gone = append(gone, ids[i])
			continue
		}
		j, err := parseJob(h)
		if err != nil {
			return nil, "", err
		}
		out = append(out, j)
	}
	if len(gone) > 0 {
		_ = s.rdb.ZRem(ctx, s.jobsIndexKey(), gone...).Err() // best effort; the next list retries
	}
	next := ""
	if len(ids) == limit && limit > 0 {
		next = ids[len(ids)-1]
	}
	return out, next, nil
}

// JobResults implements registry.Jobs: ZRANGEBYLEX of the job's devices,
// then HMGET of their states and results.
func (s *Store) JobResults(ctx context.Context, id, after string, limit int) ([]*tetherv1.JobDeviceResult, string, error) {
	min := "-"
	if after != "" {
		min = "(" + after
	}
	pipe := s.c.read.Pipeline()
	exists := pipe.Exists(ctx, s.jobKey(id))
	idsCmd := pipe.ZRangeByLex(ctx, s.jobIDsKey(id), &redis.ZRangeBy{Min: min, Max: "+", Count: int64(limit)})
	_, _ = pipe.Exec(ctx)
	if err := exists.Err(); err != nil {
		return nil, "", unavailable("job results", err)
	}
	if exists.Val() == 0 {
		return nil, "", fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
	}
	ids, err := idsCmd.Result()
	if err != nil {
		return nil, "", unavailable("job results", err)
	}
	if len(ids) == 0 {
		return nil, "", nil
	}
	pipe = s.c.read.Pipeline()
	stCmd := pipe.HMGet(ctx, s.jobStatesKey(id), ids...)
	resCmd := pipe.HMGet(ctx, s.jobResKey(id), ids...)
	_, _ = pipe.Exec(ctx)
	sts, err := stCmd.Result()
	if err != nil {
		return nil, "", unavailable("job results", err)
	}
	ress, err := resCmd.Result()
	if err != nil {
		return nil, "", unavailable("job results", err)
	}
	out := make([]*tetherv1.JobDeviceResult, len(ids))
	for i, d := range ids {
		r := &tetherv1.JobDeviceResult{}
		if b, ok := ress[i].(string); ok {
			if err := proto.Unmarshal([]byte(b), r); err != nil {
				return nil, "", fmt.Errorf("job %s device %s: result: %w", id, d, err)
			}
		}
		r.DeviceId, r.State = d, tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING
		if v, ok := sts[i].(string); ok {
			n, _ := strconv.Atoi(v)
			r.State = tetherv1.JobDeviceState(n)
		}
		out[i] = r
	}
	next := ""
	if len(ids) == limit {
		next = ids[len(ids)-1]
	}
	return out, next, nil
}

// RunningJobs implements registry.Jobs: one SMEMBERS.
func (s *Store) RunningJobs(ctx context.Context) ([]string, error) {
	ids, err := s.c.read.SMembers(ctx, s.jobsRunningKey()).Result()
	if err != nil {
		return nil, unavailable("running jobs", err)
	}
	return ids, nil
}

// AcquireJob implements registry.Jobs: the acquire script, then HGETALL.
func (s *Store) AcquireJob(ctx context.Context, id, runner string, now time.Time, ttl time.Duration) (registry.Job, error) {
	n, err := jobAcquireScript.Run(ctx, s.rdb, []string{s.jobKey(id)}, runner, now.UnixMilli(), ttl.Milliseconds()).Int()
	if err != nil {
		return registry.Job{}, unavailable("acquire job", err)
	}
	if n == -1 {
		return registry.Job{}, fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
	}
	j, gerr := s.GetJob(ctx, id)
	switch n {
	case -2:
		return j, registry.ErrJobEnded
	case -3:
		return j, registry.ErrJobHeld
	}
	return j, gerr
}

func jobDeviceErr(id, device string, n int) error {
	switch n {
	case 1:
		return nil
	case -1:
		return fmt.Errorf("job %s device %s: %w", id, device, registry.ErrNotFound)
	case -2:
		return registry.ErrJobEnded
	case -3:
		return registry.ErrJobHeld
	}
	return registry.ErrJobDeviceState
}

func (s *Store) jobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, state tetherv1.JobDeviceState, now time.Time) error {
	c := proto.Clone(r).(*tetherv1.JobDeviceResult)
	c.State = state
	b, err := proto.Marshal(c)
	if err != nil {
		return err
	}
	n, err := jobDeviceScript.Run(ctx, s.rdb, s.jobKeys(id), runner, now.UnixMilli(), r.GetDeviceId(), int(state), b).Int()
	if err != nil {
		return unavailable("job device", err)
	}
	return jobDeviceErr(id, r.GetDeviceId(), n)
}

// DispatchJobDevice implements registry.Jobs: one script.
func (s *Store) DispatchJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error {
	return s.jobDevice(ctx, id, runner, r, tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED, now)
}

// CompleteJobDevice implements registry.Jobs: one script.
func (s *Store) CompleteJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error {
	if !registry.FinalJobDeviceState(r.GetState()) {
		return fmt.Errorf("job %s device %s: %v is not a final state", id, r.GetDeviceId(), r.GetState())
	}
	return s.jobDevice(ctx, id, runner, r, r.GetState(), now)
}

func (s *Store) endJob(ctx context.Context, id, runner string, state tetherv1.JobState, now time.Time, retention time.Duration) (int, error) {
	keys := append(s.jobKeys(id), s.jobsRunningKey())
	n, err := jobEndScript.Run(ctx, s.rdb, keys, int(state), runner, now.UnixMilli(), max(retention.Milliseconds(), 1)).Int()
	if err != nil {
		return 0, unavailable("end job", err)
	}
	return n, nil
}

// FinishJob implements registry.Jobs: one script.
func (s *Store) FinishJob(ctx context.Context, id, runner string, now time.Time, retention time.Duration) error {
	n, err := s.endJob(ctx, id, runner, tetherv1.JobState_JOB_STATE_DONE, now, retention)
	if err != nil {
		return err
	}
	switch n {
	case 1:
		return nil
	case 0:
		return registry.ErrJobEnded
	case -3:
		return registry.ErrJobHeld
	}
	return fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
}

// CancelJob implements registry.Jobs: one script, then HGETALL.
func (s *Store) CancelJob(ctx context.Context, id string, now time.Time, retention time.Duration) (registry.Job, error) {
	n, err := s.endJob(ctx, id, "", tetherv1.JobState_JOB_STATE_CANCELLED, now, retention)
	if err != nil {
		return registry.Job{}, err
	}
	if n == -1 {
		return registry.Job{}, fmt.Errorf("job %s: %w", id, registry.ErrNotFound)
	}
	j, err := s.GetJob(ctx, id)
	if errors.Is(err, registry.ErrNotFound) {
		return registry.Job{}, err
	}
	return j, err
}
