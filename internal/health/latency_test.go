package health

import (
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// TestFirstTokenP95: the p95 of served attempts' latencies (their time to
// first token) over the window; failures and skips are not samples.
func TestFirstTokenP95(t *testing.T) {
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Models = []config.Model{{ID: "m/one"}}
	m := New(Options{Config: cfg})
	if p, n := m.FirstTokenP95("m/one"); p != 0 || n != 0 {
		t.Fatalf("no history: %v, %d", p, n)
	}
	for i := 1; i <= 100; i++ {
		m.Attempted("m/one", failover.Attempt{Model: "m/one", Kind: failover.KindServed, Status: 200}, time.Duration(i)*10*time.Millisecond)
	}
	m.Attempted("m/one", failover.Attempt{Model: "m/one", Kind: failover.KindFailed}, time.Hour)
	m.Attempted("m/one", failover.Attempt{Model: "m/one", Kind: failover.KindBreakerOpen}, 0)
	// A fresh answer (the cached one is from before the samples).
	m.mu.RLock()
	m.models["m/one"].p95at = 0
	m.mu.RUnlock()
	p, n := m.FirstTokenP95("m/one")
	if n != 100 || p != 950*time.Millisecond {
		t.Fatalf("FirstTokenP95 = %v over %d samples, want 950ms over 100", p, n)
	}
	var _ failover.Latencies = m // the router reads it as its Observer
}
