// Package health is the one source of truth for "is it Chutes, or is it
// me?": it hears every upstream attempt (as the failover router's
// Observer), reads the breaker, limiter and cooling state the router keeps,
// probes the upstream's /models in the background, asks Chutes' account API
// about the key, quota and balance, and serves all of it as /status (JSON),
// / (a page for a person) and /metrics (Prometheus).
package health

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
)

// Window is the span of the per-model statistics (success rate, latency
// percentiles, recent requests).
const Window = 5 * time.Minute

// ringSize bounds the samples kept per model: at more than ringSize attempts
// per Window the statistics cover the last ringSize attempts instead, which
// is still a fair picture and keeps the hot path allocation-free.
const ringSize = 512

// maxModels bounds the models tracked (and the metric labels), since a
// client may send any model name; the rest are counted as "other".
const maxModels = 256

// Options configure a Monitor. All are optional.
type Options struct {
	// Logger; nil discards.
	Logger *slog.Logger
	// Quota is the proxy's own daily count; every upstream attempt is added
	// to it. nil means none.
	Quota *quota.Counter
	// Now; nil means time.Now.
	Now func() time.Time
}

// Monitor keeps the health picture. Build it with New, hand it to
// failover.New as the Observer, then Attach the router, catalog and upstream
// client before serving its Handler or calling Run.
type Monitor struct {
	log   *slog.Logger
	now   func() time.Time
	quota *quota.Counter

	router  *failover.Router
	catalog *catalog.Catalog
	client  func() *http.Client

	mu     sync.RWMutex
	models map[string]*modelStats

	stateMu sync.Mutex
	reach   Reachability
	probed  bool // reach holds a probe's result
	account Account
	checked bool // account holds a check's result

	wake    chan struct{}
	metrics *metrics
	started atomic.Bool
}

// New returns a Monitor.
func New(o Options) *Monitor {
	m := &Monitor{log: o.Logger, now: o.Now, quota: o.Quota, models: map[string]*modelStats{}, wake: make(chan struct{}, 1)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "health")
	if m.now == nil {
		m.now = time.Now
	}
	m.metrics = newMetrics(m)
	return m
}

// Attach gives the Monitor what it reads: the router (breaker state and the
// config in force), the upstream's model list, and the proxy's upstream
// client (proxy.Server.Client), which the probe and the account check use so
// that they go through the same resolver and proxy settings as requests.
// Call it once, before Run and before serving Handler.
func (m *Monitor) Attach(r *failover.Router, c *catalog.Catalog, client func() *http.Client) {
	m.router, m.catalog, m.client = r, c, client
}

// Wake makes Run probe at once, e.g. after a config reload changed the
// upstream, the key or the probe interval.
func (m *Monitor) Wake() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// sample is one upstream attempt.
type sample struct {
	at   int64  // unix nanos
	ms   uint32 // time to first byte (served) or to failure
	kind uint8
}

const (
	sServed uint8 = iota + 1
	sFailed
	sReturned
	sCanceled
)

// LastError is a model's most recent failed attempt.
type LastError struct {
	Time   time.Time `json:"time"`
	Status int       `json:"status"` // 0: no HTTP answer (time-out, connection error)
	Reason string    `json:"reason"`
}

// modelStats is one model's recent attempts.
type modelStats struct {
	mu      sync.Mutex
	ring    [ringSize]sample
	n       int   // samples ever pushed; ring[n%ringSize] is the next slot
	total   int64 // upstream attempts since start
	lastErr LastError
	hasErr  bool
}

// stats returns id's statistics, creating them while fewer than maxModels
// are tracked; nil beyond that.
func (m *Monitor) stats(id string) *modelStats {
	m.mu.RLock()
	s := m.models[id]
	m.mu.RUnlock()
	if s != nil {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if s = m.models[id]; s == nil && (len(m.models) < maxModels || m.configured(id)) {
		s = &modelStats{}
		m.models[id] = s
	}
	return s
}

// configured reports whether id is a configured model or in a chain, which
// are always tracked.
func (m *Monitor) configured(id string) bool {
	if m.router == nil {
		return false
	}
	for _, cm := range m.router.Config().Models {
		for _, c := range m.router.Resolve(cm.ID) {
			if c == id {
				return true
			}
		}
	}
	return false
}

// label is id as a metric label: itself when tracked, else "other".
func (m *Monitor) label(id string) string {
	m.mu.RLock()
	_, ok := m.models[id]
	m.mu.RUnlock()
	if ok || m.configured(id) {
		return id
	}
	return "other"
}

// Attempted records one attempt or skip; it implements failover.Observer.
// It takes a short per-model lock and never blocks on I/O.
func (m *Monitor) Attempted(model string, a failover.Attempt, latency time.Duration) {
	s := m.stats(model)
	label := "other"
	if s != nil {
		label = model
	}
	m.metrics.attempt(label, a, latency)
	if !a.Upstream() {
		return // a skip: the breaker, limiter or cooling said no; no sample
	}
	if m.quota != nil {
		m.quota.Add(1)
	}
	if s == nil {
		return
	}
	var k uint8
	switch a.Kind {
	case failover.KindServed:
		k = sServed
	case failover.KindFailed:
		k = sFailed
	case failover.KindReturned:
		k = sReturned
	default:
		k = sCanceled
	}
	now := m.now()
	ms := uint32(min(max(latency.Milliseconds(), 0), 1<<32-1))
	s.mu.Lock()
	s.ring[s.n%ringSize] = sample{at: now.UnixNano(), ms: ms, kind: k}
	s.n++
	s.total++
	if k == sFailed || (k == sReturned && a.Status >= 400) {
		s.lastErr = LastError{Time: now, Status: a.Status, Reason: a.Reason}
		s.hasErr = true
	}
	s.mu.Unlock()
}

// Walked records a whole walk along a chain: each hop from one model to the
// next (after a failure or a skip) is a failover, counted in
// chutes_proxy_failovers_total{from,to}. failover.Router.Do should call it
// once per walk when its Observer has this method; until it does, that
// series stays empty (the Observer alone cannot tell which attempts belong
// to one request).
func (m *Monitor) Walked(res failover.Result, _ error) {
	for i := 0; i+1 < len(res.Attempts); i++ {
		m.metrics.failover(m.label(res.Attempts[i].Model), m.label(res.Attempts[i+1].Model))
	}
}

// window is a model's statistics over Window.
type window struct {
	requests int // upstream attempts
	served   int
	failed   int
	p50, p95 time.Duration
	hasLat   bool
	total    int64
	lastErr  LastError
	hasErr   bool
}

func (s *modelStats) window(now time.Time) window {
	cut := now.Add(-Window).UnixNano()
	var w window
	lat := make([]uint32, 0, 64)
	s.mu.Lock()
	w.total, w.lastErr, w.hasErr = s.total, s.lastErr, s.hasErr
	for i := range min(s.n, ringSize) {
		x := s.ring[i]
		if x.at < cut {
			continue
		}
		w.requests++
		switch x.kind {
		case sServed:
			w.served++
			lat = append(lat, x.ms)
		case sFailed:
			w.failed++
		}
	}
	s.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		w.p50 = time.Duration(percentile(lat, 50)) * time.Millisecond
		w.p95 = time.Duration(percentile(lat, 95)) * time.Millisecond
		w.hasLat = true
	}
	return w
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []uint32, p int) uint32 {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

// Run probes the upstream and checks the account every
// [health] probe_interval (jittered ±10 %, backing off up to 5 minutes
// while the upstream is unreachable) until ctx ends. probe_interval 0 turns
// both off; a config reload that turns them on takes effect after Wake.
func (m *Monitor) Run(ctx context.Context) {
	m.started.Store(true)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		cfg := m.router.Config()
		every := cfg.Health.ProbeInterval.D()
		var tick <-chan time.Time
		if every > 0 {
			r := m.ProbeNow(ctx)
			if ctx.Err() != nil {
				return
			}
			d := nextDelay(every, r.Failures, jitter())
			m.stateMu.Lock()
			m.reach.Next = m.now().Add(d)
			m.stateMu.Unlock()
			timer = time.NewTimer(d)
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-m.wake:
			if timer != nil {
				timer.Stop()
			}
		}
	}
}

// ProbeNow probes the upstream and checks the account once, now, and
// records the results.
func (m *Monitor) ProbeNow(ctx context.Context) Reachability {
	cfg := m.router.Config()
	client := m.client()
	key := cfg.Upstream.APIKey.Reveal()
	r := Probe(ctx, client, m.catalog, cfg.Upstream.BaseURL, key)
	if ctx.Err() != nil {
		return r
	}
	m.stateMu.Lock()
	prev := m.reach
	if !r.OK() {
		r.Failures = prev.Failures + 1
	}
	if !r.OK() && (prev.Failures == 0 || !m.probed) {
		m.log.Warn("upstream unreachable", "upstream", cfg.Upstream.BaseURL, "step", r.FailedStep, "err", r.Error)
	} else if r.OK() && prev.Failures > 0 {
		m.log.Info("upstream reachable again", "upstream", cfg.Upstream.BaseURL, "latency_ms", r.LatencyMS)
	}
	m.reach, m.probed = r, true
	m.stateMu.Unlock()

	if key != "" && cfg.Upstream.AccountURL != "" {
		a := CheckAccount(ctx, client, cfg.Upstream.AccountURL, key)
		if ctx.Err() != nil {
			return r
		}
		m.stateMu.Lock()
		if a.KeyState == KeyRejected && m.account.KeyState != KeyRejected {
			m.log.Error("Chutes rejected the configured API key", "key", cfg.Upstream.APIKey, "status", a.Status, "reason", a.Error)
		}
		if a.KeyState == KeyUnknown && m.checked {
			// Keep the last numbers known; say the check failed.
			old := m.account
			old.Error, old.CheckedAt, old.Status = a.Error, a.CheckedAt, a.Status
			a = old
		}
		m.account, m.checked = a, true
		m.stateMu.Unlock()
	} else {
		m.stateMu.Lock()
		m.account, m.checked = Account{}, false
		m.stateMu.Unlock()
	}
	return r
}

// Reachability returns the last probe's result; ok is false before the
// first probe.
func (m *Monitor) Reachability() (r Reachability, ok bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.reach, m.probed
}

// Account returns the last account check; ok is false when none was made
// (no key configured, account_url "", probe off, or not yet).
func (m *Monitor) Account() (a Account, ok bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.account, m.checked
}

// AccountSummary describes the account for the payment_required
// diagnostic (diagnose.Env.Account), e.g. "300 of 300 requests used today
// (the daily quota is used up; it resets at 00:00 UTC, in 5h12m); balance
// $0.00". It shows the larger of Chutes' count and the proxy's own, since
// Chutes' metering lags. "" when nothing is known.
func (m *Monitor) AccountSummary() string {
	a, ok := m.Account()
	if !ok {
		return ""
	}
	own := 0
	if m.quota != nil {
		own = m.quota.Today()
	}
	return a.Summary(own, m.now())
}
