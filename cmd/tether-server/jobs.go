package main

import (
	"flag"
	"fmt"

	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/jobs"
)

// jobFlags registers the flags of server.Jobs (docs/GATEWAY.md, "Jobs").
// Each is also TETHER_<FLAG>.
func jobFlags(fs *flag.FlagSet, j *server.Jobs) {
	fs.IntVar(&j.MaxRunning, "max-jobs", jobs.DefaultMaxRunningJobs, "jobs running at once in the cluster; CreateJob beyond it gets RESOURCE_EXHAUSTED (HTTP 429)")
	fs.IntVar(&j.MaxDevices, "max-job-devices", jobs.DefaultMaxJobDevices, "devices one job may target; a larger target gets FAILED_PRECONDITION (HTTP 400)")
	fs.DurationVar(&j.Retention, "job-retention", jobs.DefaultRetention, "how long an ended job and its per-device results are kept")
	fs.DurationVar(&j.LeaseTTL, "job-lease-ttl", jobs.DefaultLeaseTTL, "runner lease of a job: another replica resumes a job whose runner stopped renewing it this long")
}

// checkJobFlags refuses non-positive job limits.
func checkJobFlags(fs *flag.FlagSet) error {
	for _, n := range []string{"max-jobs", "max-job-devices"} {
		if v := fs.Lookup(n).Value.(flag.Getter).Get().(int); v <= 0 {
			return fmt.Errorf("%s: must be a positive number", envflag.Source(fs, n))
		}
	}
	return nil
}
