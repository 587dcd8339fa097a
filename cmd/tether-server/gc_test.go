package main

import (
	"os"
	"runtime/debug"
	"strings"
	"testing"
)

func TestGCPercentMustBePositive(t *testing.T) {
	err := run([]string{"--gc-percent", "0"})
	if err == nil || !strings.Contains(err.Error(), "gc-percent") {
		t.Fatalf("run(--gc-percent 0) = %v; want an error naming the flag", err)
	}
}

func TestGCPercentYieldsToGOGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })

	t.Setenv("GOGC", "80") // the runtime read it at start; the flag leaves it alone
	setGCPercent(50)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set, --gc-percent changed the GC target to %d", got)
	}

	os.Unsetenv("GOGC")
	setGCPercent(50)
	if got := debug.SetGCPercent(100); got != 50 {
		t.Fatalf("GC target = %d after --gc-percent 50; want 50", got)
	}
}
