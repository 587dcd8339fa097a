package loadgen

import (
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestParseSourceIPs(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		in   string
		want []netip.Addr
	}{
		{"", nil},
		{"0", nil},
		{"3", []netip.Addr{a("127.0.0.2"), a("127.0.0.3"), a("127.0.0.4")}},
		{"127.0.0.2-127.0.0.4", []netip.Addr{a("127.0.0.2"), a("127.0.0.3"), a("127.0.0.4")}},
		{"127.0.0.255-127.0.1.0", []netip.Addr{a("127.0.0.255"), a("127.0.1.0")}},
		{"10.0.0.1, 127.0.0.9-127.0.0.10", []netip.Addr{a("10.0.0.1"), a("127.0.0.9"), a("127.0.0.10")}},
	} {
		got, err := ParseSourceIPs(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseSourceIPs(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if got, err := ParseSourceIPs("254"); err != nil || len(got) != 254 || got[253] != a("127.0.0.255") {
		t.Errorf("count 254: %d addresses, %v", len(got), err)
	}
	for _, bad := range []string{"x", "127.0.0.5-127.0.0.2", "127.0.0.1-::1", "-1", "127.0.0.1-", "70000", "10.0.0.0-10.2.0.0"} {
		if got, err := ParseSourceIPs(bad); err == nil {
			t.Errorf("ParseSourceIPs(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{"": 0, "0": 0, "500": 500, "500/s": 500, " 0.5/s ": 0.5} {
		if got, err := ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1", "abc", "5/m", "Inf", "NaN"} {
		if got, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseServers(t *testing.T) {
	got, err := ParseServers("a:1, b:2,")
	if err != nil || !slices.Equal(got, []string{"a:1", "b:2"}) {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "a", "a:0", ":80", "a:x"} {
		if _, err := ParseServers(bad); err == nil {
			t.Errorf("ParseServers(%q) succeeded", bad)
		}
	}
}

func TestIsLegacySpreadsTheFraction(t *testing.T) {
	for _, tc := range []struct {
		n    int
		f    float64
		want int
	}{{50, 0.2, 10}, {7, 0.5, 3}, {10, 0, 0}, {10, 1, 10}, {1000, 0.3, 300}, {3, 0.99, 2}} {
		got := 0
		for i := range tc.n {
			if isLegacy(i, tc.f) {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("n=%d f=%v: %d legacy, want %d", tc.n, tc.f, got, tc.want)
		}
	}
	// Evenly spread: in any 5 consecutive agents exactly one of 20% is legacy.
	for i := 0; i+5 <= 100; i++ {
		n := 0
		for j := i; j < i+5; j++ {
			if isLegacy(j, 0.2) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("agents %d..%d hold %d legacy", i, i+4, n)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * 100 * time.Microsecond) // 0.1ms .. 1000ms
	}
	r := h.report()
	near := func(name string, got, want float64) {
		if math.Abs(got-want) > want*0.02 {
			t.Errorf("%s = %v, want %v ±2%%", name, got, want)
		}
	}
	near("p50", r.P50, 500)
	near("p90", r.P90, 900)
	near("p99", r.P99, 990)
	near("p999", r.P999, 999)
	near("mean", r.Mean, 500.05)
	if r.Max != 1000 || r.Count != 10000 {
		t.Errorf("max %v count %d", r.Max, r.Count)
	}
	var small histogram
	small.record(42 * time.Microsecond)
	if r := small.report(); r.P50 != 0.042 || r.P999 != 0.042 {
		t.Errorf("exact small values: %+v", r)
	}
	if r := (&histogram{}).report(); r.Count != 0 || r.P99 != 0 {
		t.Errorf("empty: %+v", r)
	}
	for _, v := range []uint64{0, 1, 127, 128, 129, 1 << 20, 1<<63 + 12345, math.MaxUint64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		if mid := histMid(i); v >= 128 && (float64(mid) < float64(v)*0.98 || float64(mid) > float64(v)*1.02) {
			t.Errorf("histMid(histIndex(%d)) = %d", v, mid)
		}
	}
}
