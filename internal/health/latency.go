package health

import (
	"slices"
	"time"
)

// FirstTokenP95 is failover.Latencies, for learned cut-offs and hedging:
// the p95 time to first token of model's served attempts over the window,
// and how many there were. The router asks at every attempt, so the answer
// is worked out at most once a second per model.
func (m *Monitor) FirstTokenP95(model string) (time.Duration, int) {
	m.mu.RLock()
	s := m.models[model]
	m.mu.RUnlock()
	if s == nil {
		return 0, 0
	}
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if now-s.p95at < int64(time.Second) {
		return s.p95, s.p95n
	}
	cut := now - int64(window)
	lat := make([]uint32, 0, 64)
	for _, x := range s.ring[:min(s.n, ringSize)] {
		if x.served && x.at >= cut {
			lat = append(lat, x.ms)
		}
	}
	s.p95, s.p95n, s.p95at = 0, len(lat), now
	if len(lat) > 0 {
		slices.Sort(lat)
		s.p95 = time.Duration(percentile(lat, 95)) * time.Millisecond
	}
	return s.p95, s.p95n
}
