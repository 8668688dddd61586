package health_test

import (
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
)

// BenchmarkAttempted is the Observer's cost on the hot path: one served
// attempt recorded from many goroutines (ring sample, counters, histogram,
// the quota count).
func BenchmarkAttempted(b *testing.B) {
	m := health.New(health.Options{Config: &config.Config{}, Quota: quota.Open(quota.Options{})})
	models := []string{"a/one", "b/two", "c/three", "d/four"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			id := models[i%len(models)]
			m.Attempted(id, failover.Attempt{Model: id, Kind: failover.KindServed, Status: 200}, 120*time.Millisecond)
			i++
		}
	})
}
