package session

import (
	"fmt"
	"time"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// Bounds on the DeviceInfo an agent reports (in Hello and InfoUpdate). The
// registry stores the info as sent and every ListDevices page and watch
// snapshot carries it, so one device must not be able to make those large.
const (
	MaxInfoLabels         = 64
	MaxLabelKeyBytes      = 128
	MaxLabelValueBytes    = 256
	MaxInfoStringBytes    = 256 // mac, hostname, os, arch, boot_id, agent_version
	MaxInfoIPAddresses    = 32
	MaxInfoIPAddressBytes = 64
	// The reported allow-list: names and argument shapes.
	MaxInfoCommands      = 64
	MaxCommandNameBytes  = 64
	MaxCommandUsageBytes = 128
	MaxCommandArgs       = 64
)

// InfoUpdate rate: a session may send InfoUpdateBurst updates at once, then
// one per InfoUpdateEvery. Updates beyond that are coalesced: the newest is
// applied when the next one is allowed and the ones in between are dropped,
// so the registry still ends up with the device's latest info. The agent
// sends one only when its info changed, checked every 30s.
const (
	InfoUpdateBurst = 5
	InfoUpdateEvery = 5 * time.Second
)

// ValidateInfo checks info against the bounds above; the error says which
// field is too large and the limit.
func ValidateInfo(info *tetherv1.DeviceInfo) error {
	if info == nil {
		return nil
	}
	str := func(name, v string) error {
		if len(v) > MaxInfoStringBytes {
			return fmt.Errorf("info.%s: %d bytes, at most %d", name, len(v), MaxInfoStringBytes)
		}
		return nil
	}
	for _, f := range []struct{ name, v string }{
		{"mac", info.GetMac()}, {"hostname", info.GetHostname()}, {"os", info.GetOs()},
		{"arch", info.GetArch()}, {"boot_id", info.GetBootId()}, {"agent_version", info.GetAgentVersion()},
	} {
		if err := str(f.name, f.v); err != nil {
			return err
		}
	}
	if n := len(info.GetIpAddresses()); n > MaxInfoIPAddresses {
		return fmt.Errorf("info.ip_addresses: %d addresses, at most %d", n, MaxInfoIPAddresses)
	}
	for i, a := range info.GetIpAddresses() {
		if len(a) > MaxInfoIPAddressBytes {
			return fmt.Errorf("info.ip_addresses[%d]: %d bytes, at most %d", i, len(a), MaxInfoIPAddressBytes)
		}
	}
	if n := len(info.GetCommands()); n > MaxInfoCommands {
		return fmt.Errorf("info.commands: %d commands, at most %d", n, MaxInfoCommands)
	}
	for i, c := range info.GetCommands() {
		if n := len(c.GetName()); n == 0 || n > MaxCommandNameBytes {
			return fmt.Errorf("info.commands[%d].name: %d bytes, want 1 to %d", i, n, MaxCommandNameBytes)
		}
		if n := len(c.GetUsage()); n > MaxCommandUsageBytes {
			return fmt.Errorf("info.commands[%d].usage: %d bytes, at most %d", i, n, MaxCommandUsageBytes)
		}
		if m := c.GetMaxArgs(); m < 0 || m > MaxCommandArgs {
			return fmt.Errorf("info.commands[%d].max_args: %d, want 0 to %d", i, m, MaxCommandArgs)
		}
	}
	if n := len(info.GetLabels()); n > MaxInfoLabels {
		return fmt.Errorf("info.labels: %d labels, at most %d", n, MaxInfoLabels)
	}
	for k, v := range info.GetLabels() {
		if len(k) == 0 {
			return fmt.Errorf("info.labels: empty key")
		}
		if len(k) > MaxLabelKeyBytes {
			return fmt.Errorf("info.labels: key %.40q...: %d bytes, at most %d", k, len(k), MaxLabelKeyBytes)
		}
		if len(v) > MaxLabelValueBytes {
			return fmt.Errorf("info.labels[%q]: value of %d bytes, at most %d", k, len(v), MaxLabelValueBytes)
		}
	}
	return nil
}

// infoLimiter is a session's token bucket for InfoUpdates.
type infoLimiter struct {
	tokens float64
	last   time.Time
}

func newInfoLimiter(now time.Time) *infoLimiter {
	return &infoLimiter{tokens: InfoUpdateBurst, last: now}
}

// take spends a token if there is one; otherwise it returns how long until
// there is.
func (l *infoLimiter) take(now time.Time) (ok bool, wait time.Duration) {
	if d := now.Sub(l.last); d > 0 {
		l.tokens = min(InfoUpdateBurst, l.tokens+float64(d)/float64(InfoUpdateEvery))
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	return false, time.Duration((1 - l.tokens) * float64(InfoUpdateEvery))
}
