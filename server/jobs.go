package server

import (
	"time"

	"github.com/tetherhq/tether/server/jobs"
	"github.com/tetherhq/tether/server/registry"
)

// Jobs configures JobService and the job runner. Zero values mean the
// jobs package defaults.
type Jobs struct {
	// MaxRunning bounds the jobs running at once in the cluster.
	MaxRunning int
	// MaxDevices bounds the devices one job targets.
	MaxDevices int
	// Retention is how long an ended job and its results are kept.
	Retention time.Duration
	// LeaseTTL is a job's runner lease.
	LeaseTTL time.Duration
	// Poll is how often the runner looks for jobs to run (tests).
	Poll time.Duration
}

// newJobs builds JobService and this replica's runner when the store keeps
// jobs (nil otherwise).
func (s *Server) newJobs(store registry.Store, sec *security) *jobs.Service {
	js, ok := store.(registry.Jobs)
	if !ok {
		s.log.Warn("the registry store keeps no jobs; JobService is not served")
		return nil
	}
	c := s.cfg.Jobs
	svc := jobs.NewService(jobs.Config{MaxJobDevices: c.MaxDevices, MaxRunningJobs: c.MaxRunning, Retention: c.Retention,
		KeyName: sec.keyName, Logger: s.log}, struct {
		registry.Jobs
		registry.Reader
	}{js, store})
	s.jobs = jobs.NewRunner(jobs.RunnerConfig{Node: s.Node(), LeaseTTL: c.LeaseTTL, Poll: c.Poll, Retention: c.Retention,
		Logger: s.log, Registerer: s.cfg.Registry}, js, s.router)
	svc.Notify(s.jobs.Wake)
	return svc
}
