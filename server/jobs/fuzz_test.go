package jobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/jobs"
	"github.com/tetherhq/tether/server/registry/memstore"
)

// FuzzValidateSpec: any spec is either refused with INVALID_ARGUMENT or
// comes back within every bound; never a panic.
func FuzzValidateSpec(f *testing.F) {
	f.Add("echo", "fleet=a", "d1,d2", 10.0, int32(4), int64(1000), int32(1), int64(0))
	f.Add("echo", "", "", 0.0, int32(0), int64(0), int32(2), int64(60000))
	f.Fuzz(func(t *testing.T, name, selector, ids string, rate float64, conc int32, timeoutMS int64, policy int32, waitMS int64) {
		spec := &tetherv1.JobSpec{Name: name, Rate: rate, Concurrency: conc, OfflinePolicy: tetherv1.OfflinePolicy(policy),
			Target: &tetherv1.JobTarget{LabelSelector: selector}}
		if ids != "" {
			spec.Target.DeviceIds = strings.Split(ids, ",")
		}
		if timeoutMS != 0 {
			spec.DeviceTimeout = durationpb.New(time.Duration(timeoutMS) * time.Millisecond)
		}
		if waitMS != 0 {
			spec.WaitDeadline = durationpb.New(time.Duration(waitMS) * time.Millisecond)
		}
		out, err := jobs.ValidateSpec(spec)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not INVALID_ARGUMENT", err)
			}
			return
		}
		if out.GetRate() <= 0 || out.GetRate() > jobs.MaxRate || out.GetConcurrency() <= 0 || out.GetConcurrency() > jobs.MaxConc {
			t.Fatalf("accepted spec out of bounds: %v", out)
		}
		if d := out.GetDeviceTimeout().AsDuration(); d <= 0 || d > 5*time.Minute {
			t.Fatalf("accepted device timeout %v", d)
		}
		if len(out.GetTarget().GetDeviceIds()) > jobs.MaxExplicitIDs || len(out.GetTarget().GetLabelSelector()) > jobs.MaxSelectorBytes {
			t.Fatalf("accepted target out of bounds")
		}
		if out.GetOfflinePolicy() == tetherv1.OfflinePolicy_OFFLINE_POLICY_WAIT && (out.GetWaitDeadline().AsDuration() <= 0 || out.GetWaitDeadline().AsDuration() > jobs.MaxWaitDeadline) {
			t.Fatalf("accepted wait deadline %v", out.GetWaitDeadline())
		}
	})
}

// FuzzJobRequests: any job id and page token given to the read and cancel
// calls is answered with a status (INVALID_ARGUMENT or NOT_FOUND here, the
// store being empty), never a panic.
func FuzzJobRequests(f *testing.F) {
	f.Add("0193a1b2c3d4-9f8e7d6c", "", int32(10))
	f.Add("j", "cjpkMQ", int32(-1))
	svc := jobs.NewService(jobs.Config{}, memstore.New(memstore.Options{}))
	f.Fuzz(func(t *testing.T, id, token string, size int32) {
		ctx := context.Background()
		check := func(what string, err error) {
			switch status.Code(err) {
			case codes.InvalidArgument, codes.NotFound:
			default:
				t.Fatalf("%s(%q, %q, %d): %v", what, id, token, size, err)
			}
		}
		_, err := svc.GetJob(ctx, &tetherv1.GetJobRequest{JobId: id})
		check("GetJob", err)
		_, err = svc.ListJobResults(ctx, &tetherv1.ListJobResultsRequest{JobId: id, PageToken: token, PageSize: size})
		check("ListJobResults", err)
		_, err = svc.CancelJob(ctx, &tetherv1.CancelJobRequest{JobId: id})
		check("CancelJob", err)
		if _, err := svc.ListJobs(ctx, &tetherv1.ListJobsRequest{PageToken: token, PageSize: size}); err != nil && status.Code(err) != codes.InvalidArgument {
			t.Fatalf("ListJobs(%q, %d): %v", token, size, err)
		}
	})
}
