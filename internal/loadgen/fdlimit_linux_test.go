package loadgen_test

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/tetherhq/tether/internal/loadgen"
)

func TestRunRefusesMoreDevicesThanTheFDLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Max > 10_000_000 {
		t.Skipf("hard open-file limit %d is too large to exceed in a test", rl.Max)
	}
	_, err := loadgen.Run(context.Background(), loadgen.Config{
		Servers: []string{"127.0.0.1:1"}, Devices: int(rl.Max) - 99, IDPrefix: "fd-",
	})
	if err == nil || !strings.Contains(err.Error(), "open-file limit") {
		t.Fatalf("err = %v, want an open-file limit refusal", err)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur != rl.Max {
		t.Errorf("soft limit %d was not raised to the hard limit %d", rl.Cur, rl.Max)
	}
}
