package registry

import (
	"context"
	"errors"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Errors of Jobs.
var (
	// ErrJobLimit: as many jobs as allowed are running.
	ErrJobLimit = errors.New("registry: too many running jobs")
	// ErrJobHeld: another runner holds the job's lease (or the caller's
	// lease on it lapsed).
	ErrJobHeld = errors.New("registry: the job is held by another runner")
	// ErrJobEnded: the job is not running (done or cancelled).
	ErrJobEnded = errors.New("registry: the job has ended")
	// ErrJobDeviceState: the device is not in a state that allows the
	// write (already dispatched, or already has a final result).
	ErrJobDeviceState = errors.New("registry: the job's device is not in that state")
)

// Job is a job as the store keeps it.
type Job struct {
	ID        string
	Spec      *tetherv1.JobSpec
	State     tetherv1.JobState
	Created   time.Time
	Ended     time.Time // zero while running
	CreatedBy string
	Total     int
	// Counts are the devices per state.
	Counts map[tetherv1.JobDeviceState]int
	// Runner is the node holding the job's runner lease until RunnerUntil.
	Runner      string
	RunnerUntil time.Time
}

// Jobs is the role of the job service and its runners: jobs (a command
// for many devices) and their per-device results. Every write is atomic;
// a device goes PENDING -> DISPATCHED (recording the session lease the
// command is sent to, before it is sent) -> a final state, or PENDING ->
// a final state (skipped), never back: a command is never sent twice for
// one job and device.
type Jobs interface {
	// CreateJob stores a RUNNING job with every device PENDING. It
	// returns ErrJobLimit when maxRunning jobs are running already.
	CreateJob(ctx context.Context, j Job, devices []string, maxRunning int) error

	// GetJob returns a job, or ErrNotFound (also once its retention
	// after it ended has passed).
	GetJob(ctx context.Context, id string) (Job, error)

	// ListJobs returns up to limit jobs with ids below before ("" = from
	// the newest), newest first (job ids sort by creation time), and the
	// id to pass as before for the next page ("" at the end).
	ListJobs(ctx context.Context, before string, limit int) ([]Job, string, error)

	// JobResults returns up to limit device results of a job after the
	// device id after, ordered by device id, and the id to continue after
	// ("" at the end). A PENDING device's result names only its id and state.
	JobResults(ctx context.Context, id, after string, limit int) ([]*tetherv1.JobDeviceResult, string, error)

	// RunningJobs returns the ids of the RUNNING jobs.
	RunningJobs(ctx context.Context) ([]string, error)

	// AcquireJob takes or renews the runner lease of a RUNNING job for
	// runner until now+ttl. ErrJobHeld when another runner's lease has not
	// lapsed; ErrJobEnded when the job is not running.
	AcquireJob(ctx context.Context, id, runner string, now time.Time, ttl time.Duration) (Job, error)

	// DispatchJobDevice records that the command is about to be sent to
	// r.LeaseId (r.State DISPATCHED): only when runner holds the job's
	// lease at now (else ErrJobHeld), the job is RUNNING (else ErrJobEnded)
	// and the device is PENDING (else ErrJobDeviceState).
	DispatchJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error

	// CompleteJobDevice records a final result (SUCCEEDED, FAILED,
	// SKIPPED_OFFLINE, UNKNOWN) of a PENDING or DISPATCHED device, only
	// when runner holds the job's lease at now (else ErrJobHeld). A
	// cancelled job still takes results of dispatched devices.
	// ErrJobDeviceState when the device already has a final result.
	CompleteJobDevice(ctx context.Context, id, runner string, r *tetherv1.JobDeviceResult, now time.Time) error

	// FinishJob marks a RUNNING job held by runner DONE at now and keeps it
	// for retention.
	FinishJob(ctx context.Context, id, runner string, now time.Time, retention time.Duration) error

	// CancelJob marks a RUNNING job CANCELLED at now (an ended job is
	// returned unchanged) and keeps it for retention.
	CancelJob(ctx context.Context, id string, now time.Time, retention time.Duration) (Job, error)
}

// FinalJobDeviceState reports whether s is a final device state.
func FinalJobDeviceState(s tetherv1.JobDeviceState) bool {
	switch s {
	case tetherv1.JobDeviceState_JOB_DEVICE_STATE_SUCCEEDED, tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED,
		tetherv1.JobDeviceState_JOB_DEVICE_STATE_SKIPPED_OFFLINE, tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN:
		return true
	}
	return false
}
