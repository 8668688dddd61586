// Package health is the one source of truth for "is it Chutes, or is it
// me?": it hears every upstream attempt (as the failover router's
// Observer), reads the breaker, limiter and cooling state the router keeps,
// probes the /models of Chutes and of each other provider in the
// background, asks Chutes' account API
// about the key, quota and balance, and serves all of it as /status (JSON),
// / (a page for a person) and /metrics (Prometheus).
package health

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
)

// window is the span of the per-model statistics (success rate, latency
// percentiles, recent requests).
const window = 5 * time.Minute

// ringSize bounds the samples kept per model: at more than ringSize attempts
// per window the statistics cover the last ringSize attempts instead, which
// is still a fair picture and keeps the hot path allocation-free.
const ringSize = 512

// maxModels bounds the models tracked (and the metric labels), since a
// client may send any model name; the rest are counted as "other".
const maxModels = 256

// Options configure a Monitor.
type Options struct {
	// Config is the config in force at start; required. Reload replaces
	// it. The Monitor is told the config rather than asking the router
	// because it is the router's Observer, built first, and its hot path
	// needs the configured models (always tracked).
	Config *config.Config
	// Catalog is the upstream's model list and each provider's, which each
	// probe refreshes and /status (and the router, for context windows)
	// reads; nil means one of the Monitor's own.
	Catalog Catalog
	// Logger; nil discards.
	Logger *slog.Logger
	// Quota is the proxy's own daily count; every upstream attempt is added
	// to it. nil means none.
	Quota *quota.Counter
}

// Router is what the Monitor reads of failover.Router: chains, aliases and
// each model's breaker, limiter and cooling.
type Router interface {
	Resolve(name string) []string
	Aliases() map[string]string
	Model(id string) *failover.Model
	Models() []*failover.Model
	CutOff(model string, limit time.Duration) (time.Duration, bool)
}

// Catalog is what the Monitor needs of the model lists: Chutes' and each
// provider's.
type Catalog interface {
	Listed(id string) (listed, known bool)
	ProviderListed(name, model string) (listed, known bool)
	Lookup(id string) (catalog.Entry, bool)
	Set(entries []catalog.Entry, at time.Time)
	SetProvider(name string, entries []catalog.Entry)
}

// Monitor keeps the health picture. It is the router's failover.Observer;
// Handler serves what it knows, Run keeps the probe going.
type Monitor struct {
	log     *slog.Logger
	quota   *quota.Counter
	catalog Catalog
	conf    atomic.Pointer[settings]

	mu     sync.RWMutex
	models map[string]*modelStats

	stateMu sync.Mutex
	reach   Probe          // zero before the first probe
	account chutes.Account // zero when no check ran

	wake    chan struct{}
	metrics *metrics
}

// settings is the config in force and what the hot path reads of it.
type settings struct {
	cfg *config.Config
	// chained holds every configured id and fallback: the models that are
	// always tracked, whatever clients send.
	chained map[string]bool
	// providers are the [[providers]] by name.
	providers map[string]*provider
}

// New returns a Monitor.
func New(o Options) *Monitor {
	m := &Monitor{
		log:     cmp.Or(o.Logger, slog.New(slog.DiscardHandler)).With("component", "health"),
		quota:   o.Quota,
		catalog: cmp.Or[Catalog](o.Catalog, catalog.New()),
		models:  map[string]*modelStats{},
		wake:    make(chan struct{}, 1),
		metrics: newMetrics(),
	}
	m.setConfig(o.Config)
	return m
}

// Reload puts cfg in force, as the router's Update does, and makes Run
// probe at once: the upstream, the key or the interval may have changed.
func (m *Monitor) Reload(cfg *config.Config) {
	m.setConfig(cfg)
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *Monitor) setConfig(cfg *config.Config) {
	var old map[string]*provider
	if s := m.conf.Load(); s != nil {
		old = s.providers
	}
	cur, gone := providers(cfg, old)
	for _, name := range gone {
		m.catalog.SetProvider(name, nil) // gone, or its base_url changed
	}
	s := &settings{cfg: cfg, chained: map[string]bool{}, providers: cur}
	for _, cm := range cfg.Models {
		s.chained[cm.ID] = true
		for _, f := range cm.Fallbacks {
			s.chained[f] = true // an alias names a configured id, also in the set
		}
	}
	m.conf.Store(s)
}

func (m *Monitor) config() *config.Config { return m.conf.Load().cfg }

// sample is one upstream attempt; one that neither served nor failed was
// returned to the client (400, 401 ...) or cancelled.
type sample struct {
	at             int64  // unix nanos
	ms             uint32 // time to first byte (served) or to failure
	served, failed bool
}

// LastError is a model's most recent failed attempt.
type LastError struct {
	Time   time.Time `json:"time"`
	Status int       `json:"status"` // 0: no HTTP answer (time-out, connection error)
	Reason string    `json:"reason"`
}

// modelStats is one model's recent attempts.
type modelStats struct {
	mu sync.Mutex
	// p95 and p95n are FirstTokenP95's last answer, worked out at p95at
	// (unix nanos) and kept for a second: the router asks at every attempt.
	p95     time.Duration
	p95n    int
	p95at   int64
	ring    [ringSize]sample
	n       int   // samples ever pushed; ring[n%ringSize] is the next slot
	total   int64 // upstream attempts since start
	lastErr *LastError
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
	if s = m.models[id]; s == nil && (len(m.models) < maxModels || m.conf.Load().chained[id]) {
		s = &modelStats{}
		m.models[id] = s
	}
	return s
}

// label is id as a metric label: itself when tracked, else "other".
func (m *Monitor) label(id string) string {
	m.mu.RLock()
	_, ok := m.models[id]
	m.mu.RUnlock()
	if ok || m.conf.Load().chained[id] {
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
	if a.Kind == failover.KindServed || keyRefusal(a.Status) {
		m.heardKey(model, a)
	}
	if !a.Upstream() {
		return // a skip: the breaker, limiter or cooling said no; no sample
	}
	if m.quota != nil {
		m.quota.Add(1)
	}
	if s == nil {
		return
	}
	now := time.Now()
	x := sample{at: now.UnixNano(), ms: uint32(min(max(latency.Milliseconds(), 0), 1<<32-1)),
		served: a.Kind == failover.KindServed, failed: a.Kind == failover.KindFailed}
	s.mu.Lock()
	s.ring[s.n%ringSize] = x
	s.n++
	s.total++
	if x.failed || a.Kind == failover.KindReturned && a.Status >= 400 {
		s.lastErr = &LastError{Time: now.UTC(), Status: a.Status, Reason: a.Reason}
	}
	s.mu.Unlock()
}

// Walked records a whole walk along a chain (failover.WalkObserver, which
// Router.Do calls once per walk): each hop from one model to the next,
// after a failure or a skip, is a failover, counted in
// chutes_proxy_failovers_total{from,to}. Attempted alone cannot tell which
// attempts belong to one request.
func (m *Monitor) Walked(res failover.Result, _ error) {
	for i := 0; i+1 < len(res.Attempts); i++ {
		m.metrics.failovers.WithLabelValues(m.label(res.Attempts[i].Model), m.label(res.Attempts[i+1].Model)).Inc()
	}
}

// report fills ms's statistics over window.
func (s *modelStats) report(ms *ModelStatus, now time.Time) {
	cut := now.Add(-window).UnixNano()
	var served int
	lat := make([]uint32, 0, 64)
	s.mu.Lock()
	ms.RequestsTotal, ms.LastError = s.total, s.lastErr
	for _, x := range s.ring[:min(s.n, ringSize)] {
		if x.at < cut {
			continue
		}
		ms.Requests++
		if x.served {
			served++
			lat = append(lat, x.ms)
		}
		if x.failed {
			ms.Failures++
		}
	}
	s.mu.Unlock()
	if n := served + ms.Failures; n > 0 {
		ms.SuccessRate = new(math.Round(float64(served)/float64(n)*1000) / 1000)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		ms.LatencyP50MS, ms.LatencyP95MS = new(percentile(lat, 50)), new(percentile(lat, 95))
	}
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []uint32, p int) int64 {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return int64(sorted[max(rank, 1)-1])
}

// Clients gives the HTTP client of a provider ("chutes" for Chutes): the
// proxy's own (proxy.Server.ClientFor), so that probes share the pools,
// resolver and proxy settings its requests use.
type Clients func(provider string) *http.Client

// Run probes the upstream and each provider and checks the account every
// [health] probe_interval (jittered ±10 %, each one backing off up to 5
// minutes while it is unreachable) until ctx ends, with the clients clients
// gives then. probe_interval 0 turns both off; a Reload that turns them on
// takes effect at once.
func (m *Monitor) Run(ctx context.Context, clients Clients) {
	all := true // the first round, and after a Reload: everything, now
	for {
		var tick <-chan time.Time
		if every := m.config().Health.ProbeInterval.D(); every > 0 {
			next := m.probeDue(ctx, clients, every, all)
			if ctx.Err() != nil {
				return
			}
			tick = time.After(time.Until(next))
		}
		all = false
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-m.wake:
			all = true
		}
	}
}

// probeDue probes, alongside each other, Chutes and every provider whose
// next probe is due (all of them when all is set), schedules each one's
// next probe after every, backed off by its own failures, and returns when
// the earliest next probe is due. A provider that is down never delays
// Chutes' probe, nor slows its schedule.
func (m *Monitor) probeDue(ctx context.Context, clients Clients, every time.Duration, all bool) time.Time {
	now := time.Now()
	next := func(failures int) time.Time { return time.Now().Add(nextDelay(every, failures, jitter())) }
	var wg sync.WaitGroup
	m.stateMu.Lock()
	due := all || !now.Before(m.reach.Next)
	m.stateMu.Unlock()
	if due {
		wg.Go(func() {
			p := m.probeChutes(ctx, clients(config.Chutes))
			m.stateMu.Lock()
			m.reach.Next = next(p.Failures)
			m.stateMu.Unlock()
		})
	}
	for name, pv := range m.conf.Load().providers {
		pv.mu.Lock()
		due := all || !now.Before(pv.probe.Next)
		pv.mu.Unlock()
		if due {
			wg.Go(func() {
				p := m.probeProvider(ctx, clients(name), name, pv)
				pv.mu.Lock()
				pv.probe.Next = next(p.Failures)
				pv.mu.Unlock()
			})
		}
	}
	wg.Wait()

	m.stateMu.Lock()
	earliest := m.reach.Next
	m.stateMu.Unlock()
	for _, pv := range m.conf.Load().providers {
		pv.mu.Lock()
		if at := pv.probe.Next; at.Before(earliest) {
			earliest = at // zero for a provider a Reload just added: now
		}
		pv.mu.Unlock()
	}
	return earliest
}

// Probe is the last probe of the upstream, with the backoff's state.
type Probe struct {
	chutes.Reachability
	// Failures counts consecutive failed probes (the backoff's exponent).
	Failures int `json:"consecutive_failures"`
	// Next is when the next probe is due; zero when none is scheduled.
	Next time.Time `json:"next_probe,omitzero"`
}

// ProbeNow probes the upstream, refreshing the model list, and checks the
// account once, now, and probes each provider alongside, and records the
// results; it returns the upstream's probe.
func (m *Monitor) ProbeNow(ctx context.Context, clients Clients) Probe {
	var wg sync.WaitGroup
	for name, pv := range m.conf.Load().providers {
		wg.Go(func() { m.probeProvider(ctx, clients(name), name, pv) })
	}
	p := m.probeChutes(ctx, clients(config.Chutes))
	wg.Wait()
	return p
}

// probeChutes probes the upstream with client, refreshing the model list,
// and checks the account, and records the results.
func (m *Monitor) probeChutes(ctx context.Context, client *http.Client) Probe {
	cfg := m.config()
	key := cfg.Upstream.APIKey.Reveal()
	t, _ := cfg.Target(config.Chutes)
	r, entries := chutes.Probe(ctx, client, t)
	p := Probe{Reachability: r}
	if ctx.Err() != nil {
		return p
	}
	if r.OK() {
		m.catalog.Set(entries, time.Now())
	}
	m.stateMu.Lock()
	prev := m.reach
	if !r.OK() {
		p.Failures = prev.Failures + 1
	}
	if !r.OK() && prev.Failures == 0 {
		m.log.Warn("upstream unreachable", "upstream", cfg.Upstream.BaseURL, "step", r.FailedStep, "err", r.Error)
	} else if r.OK() && prev.Failures > 0 {
		m.log.Info("upstream reachable again", "upstream", cfg.Upstream.BaseURL, "latency_ms", r.LatencyMS)
	}
	p.Next = prev.Next
	m.reach = p
	m.stateMu.Unlock()

	var a chutes.Account
	if key != "" && cfg.Upstream.AccountURL != "" {
		a = chutes.CheckAccount(ctx, client, cfg.Upstream.AccountURL, key)
		if ctx.Err() != nil {
			return p
		}
	}
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	if a.KeyState == chutes.KeyRejected && m.account.KeyState != chutes.KeyRejected {
		m.log.Error("Chutes rejected the configured API key", "key", cfg.Upstream.APIKey, "status", a.Status, "reason", a.Error)
	}
	if a.KeyState == chutes.KeyUnknown && !m.account.CheckedAt.IsZero() {
		// Keep the last numbers known; say the check failed.
		old := m.account
		old.Error, old.CheckedAt, old.Status = a.Error, a.CheckedAt, a.Status
		a = old
	}
	m.account = a
	return p
}

// state returns the last probe and account check; probed and checked are
// false when there was none (checked also with no key or account_url "").
func (m *Monitor) state() (p Probe, probed bool, a chutes.Account, checked bool) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	return m.reach, !m.reach.Checked.IsZero(), m.account, !m.account.CheckedAt.IsZero()
}

// AccountSummary describes the account for the payment_required
// diagnostic (diagnose.Env.Account), e.g. "300 of 300 requests used today:
// the daily quota is used up (resets at 00:00 UTC, in 5h12m); balance
// $0.00". It shows the larger of Chutes' count and the proxy's own, since
// Chutes' metering lags. "" when nothing is known.
func (m *Monitor) AccountSummary() string {
	_, _, a, checked := m.state()
	if !checked {
		return ""
	}
	own := 0
	if m.quota != nil {
		own = m.quota.Today()
	}
	return a.Summary(own, time.Now())
}

// maxBackoff is the longest wait between probes while the upstream is
// unreachable (unless probe_interval itself is longer).
const maxBackoff = 5 * time.Minute

// nextDelay is the wait before the next probe: every, doubled per
// consecutive failure up to maxBackoff (or every, if that is longer),
// times j (a jitter factor around 1) so that many proxies do not probe in
// step.
func nextDelay(every time.Duration, failures int, j float64) time.Duration {
	d := every
	for i := 0; i < failures && d < maxBackoff; i++ {
		d = min(2*d, maxBackoff)
	}
	return time.Duration(float64(d) * j)
}

// jitter is a factor in [0.9, 1.1).
func jitter() float64 { return 0.9 + 0.2*rand.Float64() }
