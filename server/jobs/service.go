package jobs

import (
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherhq/tether/api/deviceid"
	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/router"
)

// Limits and defaults of a job (documented in docs/GATEWAY.md).
const (
	// MaxJobDevices bounds the devices one job targets.
	DefaultMaxJobDevices = 20000
	// MaxExplicitIDs bounds target.device_ids in a request.
	MaxExplicitIDs = 1000
	// DefaultMaxRunningJobs bounds the jobs running at once (cluster-wide).
	DefaultMaxRunningJobs = 16
	// DefaultRetention is how long an ended job and its results are kept.
	DefaultRetention = 7 * 24 * time.Hour
	DefaultRate      = 10.0
	MaxRate          = 1000.0
	DefaultConc      = 16
	MaxConc          = 256
	MaxWaitDeadline  = 24 * time.Hour
	// MaxSelectorBytes bounds target.label_selector.
	MaxSelectorBytes = 1024
	// StoredOutputCap bounds the output kept per device result.
	StoredOutputCap = 1024
	DefaultPageSize = 100
	MaxPageSize     = 1000
	DefaultJobsPage = 20
	MaxJobsPage     = 100
)

// Store is what the job service needs of the registry: jobs and devices
// (to resolve a target).
type Store interface {
	registry.Jobs
	registry.Reader
}

// Config configures the Service.
type Config struct {
	MaxJobDevices  int           // default DefaultMaxJobDevices
	MaxRunningJobs int           // default DefaultMaxRunningJobs
	Retention      time.Duration // default DefaultRetention
	// KeyName names the API key of a call ("" without keys): the job's
	// created_by.
	KeyName func(ctx context.Context) string
	Logger  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.MaxJobDevices <= 0 {
		c.MaxJobDevices = DefaultMaxJobDevices
	}
	if c.MaxRunningJobs <= 0 {
		c.MaxRunningJobs = DefaultMaxRunningJobs
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service implements tetherv1.JobServiceServer.
type Service struct {
	tetherv1.UnimplementedJobServiceServer
	cfg   Config
	store Store
	// wake, if set, is told about a new job (the local runner picks it up
	// at once instead of at its next poll).
	wake func()
}

// NewService returns the JobService.
func NewService(cfg Config, store Store) *Service {
	cfg.setDefaults()
	return &Service{cfg: cfg, store: store}
}

// Notify makes CreateJob call wake after a job is stored.
func (s *Service) Notify(wake func()) { s.wake = wake }

// ValidateSpec checks a job spec and fills in its defaults; every bad field
// is INVALID_ARGUMENT.
func ValidateSpec(spec *tetherv1.JobSpec) (*tetherv1.JobSpec, error) {
	if spec == nil {
		return nil, status.Error(codes.InvalidArgument, "spec: required")
	}
	if err := router.ValidateCommand(spec.GetName(), spec.GetArgs()); err != nil {
		return nil, err
	}
	t := spec.GetTarget()
	if t.GetLabelSelector() == "" && len(t.GetDeviceIds()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "target: a label_selector or device_ids is required")
	}
	if len(t.GetLabelSelector()) > MaxSelectorBytes {
		return nil, status.Errorf(codes.InvalidArgument, "target.label_selector: longer than %d bytes", MaxSelectorBytes)
	}
	if _, err := registry.ParseSelector(t.GetLabelSelector()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "target.label_selector: %v", err)
	}
	if len(t.GetDeviceIds()) > MaxExplicitIDs {
		return nil, status.Errorf(codes.InvalidArgument, "target.device_ids: %d ids, at most %d allowed (use a label selector)", len(t.GetDeviceIds()), MaxExplicitIDs)
	}
	for i, id := range t.GetDeviceIds() {
		if err := deviceid.Validate(id); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "target.device_ids[%d]: %v", i, err)
		}
	}
	out := &tetherv1.JobSpec{Name: spec.GetName(), Args: spec.GetArgs(),
		Target: &tetherv1.JobTarget{LabelSelector: t.GetLabelSelector(), DeviceIds: t.GetDeviceIds()},
		Rate:   spec.GetRate(), Concurrency: spec.GetConcurrency(), OfflinePolicy: spec.GetOfflinePolicy()}
	switch r := spec.GetRate(); {
	case math.IsNaN(r) || r < 0 || math.IsInf(r, 0):
		return nil, status.Errorf(codes.InvalidArgument, "rate: %v is not a positive number of devices per second", r)
	case r == 0:
		out.Rate = DefaultRate
	case r > MaxRate:
		return nil, status.Errorf(codes.InvalidArgument, "rate: %v exceeds the maximum of %v devices per second", r, MaxRate)
	}
	switch c := spec.GetConcurrency(); {
	case c < 0:
		return nil, status.Errorf(codes.InvalidArgument, "concurrency: %d is negative", c)
	case c == 0:
		out.Concurrency = DefaultConc
	case c > MaxConc:
		return nil, status.Errorf(codes.InvalidArgument, "concurrency: %d exceeds the maximum of %d", c, MaxConc)
	}
	to, err := router.CommandTimeout(spec.GetDeviceTimeout())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "device_%s", status.Convert(err).Message())
	}
	out.DeviceTimeout = durationpb.New(to)
	switch spec.GetOfflinePolicy() {
	case tetherv1.OfflinePolicy_OFFLINE_POLICY_UNSPECIFIED, tetherv1.OfflinePolicy_OFFLINE_POLICY_SKIP:
		out.OfflinePolicy = tetherv1.OfflinePolicy_OFFLINE_POLICY_SKIP
		if spec.GetWaitDeadline() != nil {
			return nil, status.Error(codes.InvalidArgument, "wait_deadline: only with offline_policy WAIT")
		}
	case tetherv1.OfflinePolicy_OFFLINE_POLICY_WAIT:
		w := spec.GetWaitDeadline()
		if w == nil {
			return nil, status.Error(codes.InvalidArgument, "wait_deadline: required with offline_policy WAIT")
		}
		if err := w.CheckValid(); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "wait_deadline: %v", err)
		}
		if d := w.AsDuration(); d <= 0 || d > MaxWaitDeadline {
			return nil, status.Errorf(codes.InvalidArgument, "wait_deadline: %v is not in (0, %v]", d, MaxWaitDeadline)
		}
		out.WaitDeadline = w
	default:
		return nil, status.Errorf(codes.InvalidArgument, "offline_policy: unknown value %d", spec.GetOfflinePolicy())
	}
	return out, nil
}

// newJobID returns a job id that sorts by creation time: 12 hex digits of
// Unix milliseconds, a dash, 8 random hex digits.
func newJobID(now time.Time) string {
	var b [4]byte
	_, _ = crand.Read(b[:])
	return fmt.Sprintf("%012x-%s", now.UnixMilli(), hex.EncodeToString(b[:]))
}

func validJobID(id string) error {
	if id == "" || len(id) > 64 {
		return status.Error(codes.InvalidArgument, "job_id: 1 to 64 characters required")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return status.Errorf(codes.InvalidArgument, "job_id: character %q not allowed", rune(c))
		}
	}
	return nil
}

func storeErr(op string, err error) error {
	switch {
	case errors.Is(err, registry.ErrJobLimit):
		return status.Errorf(codes.ResourceExhausted, "%s: the cluster runs as many jobs as allowed at once; wait for one to end or cancel one", op)
	}
	return router.StoreErr(op, err)
}

// resolve lists the devices a target selects: those matching the selector
// plus the explicit ids, at most max (more is FAILED_PRECONDITION).
func (s *Service) resolve(ctx context.Context, t *tetherv1.JobTarget, max int) ([]string, error) {
	seen := map[string]bool{}
	var ids []string
	add := func(id string) error {
		if seen[id] {
			return nil
		}
		if len(ids) >= max {
			return status.Errorf(codes.FailedPrecondition, "target: selects more than %d devices (the job size limit); narrow the selector", max)
		}
		seen[id] = true
		ids = append(ids, id)
		return nil
	}
	for _, id := range t.GetDeviceIds() {
		if err := add(id); err != nil {
			return nil, err
		}
	}
	if t.GetLabelSelector() != "" {
		sel, err := registry.ParseSelector(t.GetLabelSelector())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "target.label_selector: %v", err)
		}
		after := ""
		for {
			page, err := s.store.List(ctx, registry.ListQuery{After: after, Limit: MaxPageSize, Selector: sel})
			if err != nil {
				return nil, storeErr("resolve target", err)
			}
			for _, r := range page.Records {
				if err := add(r.DeviceID); err != nil {
					return nil, err
				}
			}
			if page.Next == "" {
				break
			}
			after = page.Next
		}
	}
	if len(ids) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "target: selects no device")
	}
	return ids, nil
}

// CreateJob implements JobService.
func (s *Service) CreateJob(ctx context.Context, req *tetherv1.CreateJobRequest) (*tetherv1.CreateJobResponse, error) {
	spec, err := ValidateSpec(req.GetSpec())
	if err != nil {
		return nil, err
	}
	ids, err := s.resolve(ctx, spec.GetTarget(), s.cfg.MaxJobDevices)
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	j := registry.Job{ID: newJobID(now), Spec: spec, Created: now}
	if s.cfg.KeyName != nil {
		j.CreatedBy = s.cfg.KeyName(ctx)
	}
	if err := s.store.CreateJob(ctx, j, ids, s.cfg.MaxRunningJobs); err != nil {
		return nil, storeErr("create job", err)
	}
	s.cfg.Logger.Info("job created", "job", j.ID, "devices", len(ids), "command", spec.GetName(), "rate", spec.GetRate(), "by", j.CreatedBy)
	if s.wake != nil {
		s.wake()
	}
	got, err := s.store.GetJob(ctx, j.ID)
	if err != nil {
		return nil, storeErr("job "+j.ID, err)
	}
	return &tetherv1.CreateJobResponse{Job: jobProto(got)}, nil
}

// GetJob implements JobService.
func (s *Service) GetJob(ctx context.Context, req *tetherv1.GetJobRequest) (*tetherv1.GetJobResponse, error) {
	if err := validJobID(req.GetJobId()); err != nil {
		return nil, err
	}
	j, err := s.store.GetJob(ctx, req.GetJobId())
	if err != nil {
		return nil, storeErr("job "+req.GetJobId(), err)
	}
	return &tetherv1.GetJobResponse{Job: jobProto(j)}, nil
}

func pageSize(n int32, def, max int) (int, error) {
	switch {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "page_size: %d is negative", n)
	case n == 0:
		return def, nil
	case int(n) > max:
		return max, nil
	}
	return int(n), nil
}

// Page tokens: base64url of "<kind>:<last id>".
func encodeToken(kind, after string) string {
	if after == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + after))
}

func decodeToken(kind, tok string, valid func(string) error) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(b), kind+":") {
		return "", status.Error(codes.InvalidArgument, "page_token: not a token this API issued")
	}
	after := string(b[len(kind)+1:])
	if err := valid(after); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "page_token: %v", status.Convert(err).Message())
	}
	return after, nil
}

// ListJobResults implements JobService.
func (s *Service) ListJobResults(ctx context.Context, req *tetherv1.ListJobResultsRequest) (*tetherv1.ListJobResultsResponse, error) {
	if err := validJobID(req.GetJobId()); err != nil {
		return nil, err
	}
	n, err := pageSize(req.GetPageSize(), DefaultPageSize, MaxPageSize)
	if err != nil {
		return nil, err
	}
	after, err := decodeToken("r", req.GetPageToken(), deviceid.Validate)
	if err != nil {
		return nil, err
	}
	rs, next, err := s.store.JobResults(ctx, req.GetJobId(), after, n)
	if err != nil {
		return nil, storeErr("job "+req.GetJobId(), err)
	}
	return &tetherv1.ListJobResultsResponse{Results: rs, NextPageToken: encodeToken("r", next)}, nil
}

// ListJobs implements JobService.
func (s *Service) ListJobs(ctx context.Context, req *tetherv1.ListJobsRequest) (*tetherv1.ListJobsResponse, error) {
	n, err := pageSize(req.GetPageSize(), DefaultJobsPage, MaxJobsPage)
	if err != nil {
		return nil, err
	}
	before, err := decodeToken("j", req.GetPageToken(), validJobID)
	if err != nil {
		return nil, err
	}
	js, next, err := s.store.ListJobs(ctx, before, n)
	if err != nil {
		return nil, storeErr("list jobs", err)
	}
	resp := &tetherv1.ListJobsResponse{NextPageToken: encodeToken("j", next)}
	for _, j := range js {
		resp.Jobs = append(resp.Jobs, jobProto(j))
	}
	return resp, nil
}

// CancelJob implements JobService.
func (s *Service) CancelJob(ctx context.Context, req *tetherv1.CancelJobRequest) (*tetherv1.CancelJobResponse, error) {
	if err := validJobID(req.GetJobId()); err != nil {
		return nil, err
	}
	j, err := s.store.CancelJob(ctx, req.GetJobId(), s.cfg.Now(), s.cfg.Retention)
	if err != nil {
		return nil, storeErr("job "+req.GetJobId(), err)
	}
	s.cfg.Logger.Info("job cancelled", "job", j.ID)
	return &tetherv1.CancelJobResponse{Job: jobProto(j)}, nil
}

func jobProto(j registry.Job) *tetherv1.Job {
	c := func(s tetherv1.JobDeviceState) int32 { return int32(j.Counts[s]) }
	p := &tetherv1.Job{JobId: j.ID, Spec: j.Spec, State: j.State, Total: int32(j.Total), CreatedBy: j.CreatedBy,
		Progress: &tetherv1.JobProgress{
			Pending: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_PENDING), Dispatched: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_DISPATCHED),
			Succeeded: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_SUCCEEDED), Failed: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_FAILED),
			SkippedOffline: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_SKIPPED_OFFLINE), Unknown: c(tetherv1.JobDeviceState_JOB_DEVICE_STATE_UNKNOWN),
		}}
	if !j.Created.IsZero() {
		p.CreateTime = timestamppb.New(j.Created)
	}
	if !j.Ended.IsZero() {
		p.EndTime = timestamppb.New(j.Ended)
	}
	if j.State == tetherv1.JobState_JOB_STATE_RUNNING {
		p.Runner = j.Runner
	}
	return p
}
