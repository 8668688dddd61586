package health

import (
	"testing"
	"time"
)

func TestNextDelay(t *testing.T) {
	tests := []struct {
		name     string
		every    time.Duration
		failures int
		jitter   float64
		want     time.Duration
	}{
		{"healthy", time.Minute, 0, 1, time.Minute},
		{"one failure doubles", time.Minute, 1, 1, 2 * time.Minute},
		{"two failures", time.Minute, 2, 1, 4 * time.Minute},
		{"capped at 5 min", time.Minute, 3, 1, 5 * time.Minute},
		{"many failures stay capped", time.Minute, 1000, 1, 5 * time.Minute},
		{"interval above the cap is kept", 10 * time.Minute, 4, 1, 10 * time.Minute},
		{"jitter low", time.Minute, 0, 0.9, 54 * time.Second},
		{"jitter high", time.Minute, 0, 1.1, 66 * time.Second},
		{"short interval backs off too", 10 * time.Second, 3, 1, 80 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextDelay(tt.every, tt.failures, tt.jitter); got != tt.want {
				t.Fatalf("nextDelay(%v, %d, %v) = %v, want %v", tt.every, tt.failures, tt.jitter, got, tt.want)
			}
		})
	}
	for range 1000 {
		if j := jitter(); j < 0.9 || j >= 1.1 {
			t.Fatalf("jitter %v outside ±10%%", j)
		}
	}
}

func TestPercentile(t *testing.T) {
	v := []uint32{10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	if p := percentile(v, 50); p != 50 {
		t.Fatalf("p50 = %d", p)
	}
	if p := percentile(v, 95); p != 100 {
		t.Fatalf("p95 = %d", p)
	}
	if p := percentile([]uint32{7}, 95); p != 7 {
		t.Fatalf("p95 of one = %d", p)
	}
}
