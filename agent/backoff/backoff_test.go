package backoff

import (
	"testing"
	"time"
)

// maxRand always draws the largest value, so Next returns the top of its
// range (ceiling - 1ns).
func maxRand(n int64) int64 { return n - 1 }

func zeroRand(int64) int64 { return 0 }

func TestCeilingDoublesFromInitialUpToMax(t *testing.T) {
	b := New(Config{Initial: time.Second, Max: 10 * time.Second, Rand: maxRand})
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, w := range want {
		w *= time.Second
		if c := b.Ceiling(); c != w {
			t.Fatalf("attempt %d: ceiling %v, want %v", i, c, w)
		}
		if d := b.Next(); d != w-1 {
			t.Fatalf("attempt %d: Next with the largest draw = %v, want %v", i, d, w-1)
		}
	}
}

func TestFullJitterCanReturnZero(t *testing.T) {
	b := New(Config{Rand: zeroRand})
	for i := 0; i < 10; i++ {
		if d := b.Next(); d != 0 {
			t.Fatalf("Next with a zero draw = %v, want 0 (full jitter)", d)
		}
	}
}

func TestDelaysStayWithinTheCeilingWithTheRealSource(t *testing.T) {
	b := New(Config{Initial: 100 * time.Millisecond, Max: time.Second})
	for i := 0; i < 1000; i++ {
		c := b.Ceiling()
		if d := b.Next(); d < 0 || d >= c {
			t.Fatalf("draw %d: %v outside [0, %v)", i, d, c)
		}
	}
}

func TestMinIsAFloorClampedToTheCeiling(t *testing.T) {
	b := New(Config{Initial: 50 * time.Millisecond, Max: time.Second, Min: 100 * time.Millisecond, Rand: zeroRand})
	if d := b.Next(); d != 50*time.Millisecond {
		t.Fatalf("first Next = %v, want the floor clamped to the 50ms ceiling", d)
	}
	if d := b.Next(); d != 100*time.Millisecond {
		t.Fatalf("second Next = %v, want the 100ms floor", d)
	}
}

func TestResetStartsOver(t *testing.T) {
	b := New(Config{Rand: maxRand})
	for i := 0; i < 20; i++ {
		b.Next()
	}
	if c := b.Ceiling(); c != DefaultMax {
		t.Fatalf("ceiling after many attempts = %v, want the default max %v", c, DefaultMax)
	}
	b.Reset()
	if c := b.Ceiling(); c != DefaultInitial {
		t.Fatalf("ceiling after Reset = %v, want %v", c, DefaultInitial)
	}
	if b.Attempt() != 0 {
		t.Fatalf("attempt after Reset = %d", b.Attempt())
	}
}

func TestZeroConfigMeansDefaults(t *testing.T) {
	b := New(Config{})
	if b.Ceiling() != time.Second || b.Max() != time.Minute {
		t.Fatalf("ceiling %v max %v, want 1s and 1m", b.Ceiling(), b.Max())
	}
}

func TestHugeAttemptCountsDoNotOverflow(t *testing.T) {
	b := New(Config{Initial: time.Nanosecond, Max: time.Duration(1<<63 - 1), Rand: maxRand})
	for i := 0; i < 200; i++ {
		if d := b.Next(); d < 0 {
			t.Fatalf("attempt %d: negative delay %v", i, d)
		}
	}
}

func TestABrokenRandomSourceCannotEscapeTheBounds(t *testing.T) {
	for _, r := range []func(int64) int64{func(n int64) int64 { return n * 2 }, func(int64) int64 { return -5 }} {
		b := New(Config{Rand: r})
		if d := b.Next(); d < 0 || d >= time.Second {
			t.Fatalf("Next = %v, want within [0, 1s)", d)
		}
	}
}
