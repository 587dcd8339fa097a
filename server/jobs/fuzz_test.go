package jobs_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/server/jobs"
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
