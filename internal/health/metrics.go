package health

import (
	"math"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// metrics is the Monitor's Prometheus side, on a registry of its own (no
// globals, so tests and several Monitors in one process never collide).
// Counters are updated on the hot path; state (breakers, quota, balance,
// reachability) is read at scrape time by the collector below, which each
// Handler registers with its Router.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	attempts  *prometheus.CounterVec
	failovers *prometheus.CounterVec
	skips     *prometheus.CounterVec
	resumes   *prometheus.CounterVec
	ttfb      *prometheus.HistogramVec
}

func newMetrics() *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	x := &metrics{reg: prometheus.NewRegistry()}
	x.requests = counter("chutes_proxy_requests_total",
		"Client requests to the chat, completion and embedding endpoints, by the model that served (\"none\" if none) and outcome (\"served\" or the error code).",
		"model", "outcome")
	x.attempts = counter("chutes_proxy_attempts_total",
		"Upstream attempts and skips per model, by kind (served, failed, returned, canceled; breaker_open, cooling, local_limit, context_too_small for skips).",
		"model", "kind")
	x.failovers = counter("chutes_proxy_failovers_total", "Moves along a fallback chain from one model to the next.", "from", "to")
	x.skips = counter("chutes_proxy_limiter_skips_total",
		"Models skipped because the proxy's own rate limit had no token within max_wait.", "model")
	x.resumes = counter("chutes_proxy_resumes_total",
		"Streams cut after their first token and resumed (resume_streams), by the model that was cut and the one that continued.", "from", "to")
	x.ttfb = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "chutes_proxy_ttfb_seconds",
		Help:    "Time to the first byte of a served upstream response.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60},
	}, []string{"model"})
	x.reg.MustRegister(x.requests, x.attempts, x.failovers, x.skips, x.resumes, x.ttfb,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return x
}

// handler serves the counters and m's state, with r's breakers.
func (x *metrics) handler(m *Monitor, r Router) http.Handler {
	state := prometheus.NewRegistry()
	state.MustRegister(stateCollector{m, r})
	return promhttp.HandlerFor(prometheus.Gatherers{x.reg, state}, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (x *metrics) attempt(model string, a failover.Attempt, latency time.Duration) {
	kind := a.Kind
	if kind == "" {
		kind = "unknown"
	}
	x.attempts.WithLabelValues(model, kind).Inc()
	switch kind {
	case failover.KindServed:
		x.ttfb.WithLabelValues(model).Observe(latency.Seconds())
	case failover.KindLocalLimit:
		x.skips.WithLabelValues(model).Inc()
	}
}

var (
	descBreaker   = prometheus.NewDesc("chutes_proxy_breaker_state", "Circuit breaker state per model: 0 closed, 1 half-open, 2 open.", []string{"model"}, nil)
	descAvailable = prometheus.NewDesc("chutes_proxy_model_available", "1 when the model would be tried now (breaker not open, not cooling after a 429, listed upstream).", []string{"model"}, nil)
	descQuotaUsed = prometheus.NewDesc("chutes_proxy_quota_used", "Requests used today (UTC): source=\"proxy\" is the proxy's own count, source=\"chutes\" Chutes' account API.", []string{"source"}, nil)
	descQuotaMax  = prometheus.NewDesc("chutes_proxy_quota_limit", "Daily request limit: source=\"proxy\" is [quota] daily_requests, source=\"chutes\" the account's quota; 0 = none.", []string{"source"}, nil)
	descBalance   = prometheus.NewDesc("chutes_proxy_account_balance_dollars", "Chutes account balance in USD, when the account API answers.", nil, nil)
	descKey       = prometheus.NewDesc("chutes_proxy_key_accepted", "1 when Chutes' account API accepted the configured key, 0 when it rejected it; absent when unknown.", nil, nil)
	descUp        = prometheus.NewDesc("chutes_proxy_upstream_up", "1 when the last probe of GET {base_url}/models succeeded, 0 when it failed; absent before the first probe.", nil, nil)
	descProbe     = prometheus.NewDesc("chutes_proxy_probe_duration_seconds", "Duration of the last upstream probe.", nil, nil)

	// The provider_ families cover Chutes (provider="chutes", the same
	// probe as the two above, which keep their documented unlabelled
	// series) and each [[providers]] table.
	descProvUp = prometheus.NewDesc("chutes_proxy_provider_up",
		"1 when the last probe of the provider's GET {base_url}/models got a model list, 0 when it failed; absent before the first probe.", []string{"provider"}, nil)
	descProvProbe = prometheus.NewDesc("chutes_proxy_provider_probe_duration_seconds",
		"Duration of the last probe of the provider's model list.", []string{"provider"}, nil)
	descProvListed = prometheus.NewDesc("chutes_proxy_provider_models_listed",
		"Models in the provider's last model list; absent before one.", []string{"provider"}, nil)
	descProvKey = prometheus.NewDesc("chutes_proxy_provider_key_accepted",
		"1 when the provider accepted its own key (Chutes: its account API; others: a request served), 0 when it answered 401/403; absent when unknown or with no key.", []string{"provider"}, nil)
)

// stateCollector reads the Monitor's and the router's state at scrape time.
type stateCollector struct {
	m *Monitor
	r Router
}

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBreaker, descAvailable, descQuotaUsed, descQuotaMax, descBalance, descKey, descUp, descProbe,
		descProvUp, descProvProbe, descProvListed, descProvKey} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	m, now := c.m, time.Now()
	for _, fm := range c.r.Models() {
		label := m.label(fm.ID)
		if label == "other" {
			continue
		}
		// gobreaker numbers its states 0 closed, 1 half-open, 2 open.
		ch <- prometheus.MustNewConstMetric(descBreaker, prometheus.GaugeValue, float64(fm.State()), label)
		ch <- prometheus.MustNewConstMetric(descAvailable, prometheus.GaugeValue, b2f(m.modelStatus(c.r, fm, now).Available), label)
	}
	if m.quota != nil {
		s := m.quota.Snapshot()
		ch <- prometheus.MustNewConstMetric(descQuotaUsed, prometheus.GaugeValue, float64(s.Count), "proxy")
		ch <- prometheus.MustNewConstMetric(descQuotaMax, prometheus.GaugeValue, float64(s.Limit), "proxy")
	}
	p, probed, a, checked := m.state()
	if checked {
		if a.KeyState != chutes.KeyUnknown {
			ch <- prometheus.MustNewConstMetric(descKey, prometheus.GaugeValue, b2f(a.KeyState == chutes.KeyAccepted))
			ch <- prometheus.MustNewConstMetric(descProvKey, prometheus.GaugeValue, b2f(a.KeyState == chutes.KeyAccepted), config.Chutes)
		}
		if a.HasQuota {
			ch <- prometheus.MustNewConstMetric(descQuotaUsed, prometheus.GaugeValue, a.Quota.Used, "chutes")
			ch <- prometheus.MustNewConstMetric(descQuotaMax, prometheus.GaugeValue, a.Quota.Limit, "chutes")
		}
		if a.HasBalance && !math.IsNaN(a.Balance) {
			ch <- prometheus.MustNewConstMetric(descBalance, prometheus.GaugeValue, a.Balance)
		}
	}
	if probed {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, b2f(p.OK()))
		ch <- prometheus.MustNewConstMetric(descProbe, prometheus.GaugeValue, float64(p.LatencyMS)/1000)
		ch <- prometheus.MustNewConstMetric(descProvUp, prometheus.GaugeValue, b2f(p.OK()), config.Chutes)
		ch <- prometheus.MustNewConstMetric(descProvProbe, prometheus.GaugeValue, float64(p.LatencyMS)/1000, config.Chutes)
		if p.OK() {
			ch <- prometheus.MustNewConstMetric(descProvListed, prometheus.GaugeValue, float64(p.Models), config.Chutes)
		}
	}
	cfg := m.config()
	provs := m.conf.Load().providers
	for _, cp := range cfg.Providers {
		pv := provs[cp.Name]
		if pv == nil {
			continue
		}
		ps := providerStatus(cfg, cp.Name, pv, now)
		if pr := ps.Probe; pr != nil {
			ch <- prometheus.MustNewConstMetric(descProvUp, prometheus.GaugeValue, b2f(pr.OK()), cp.Name)
			ch <- prometheus.MustNewConstMetric(descProvProbe, prometheus.GaugeValue, float64(pr.LatencyMS)/1000, cp.Name)
		}
		if ps.ModelsListed != nil {
			ch <- prometheus.MustNewConstMetric(descProvListed, prometheus.GaugeValue, float64(*ps.ModelsListed), cp.Name)
		}
		if st := ps.Key.State; st == chutes.KeyAccepted || st == chutes.KeyRejected {
			ch <- prometheus.MustNewConstMetric(descProvKey, prometheus.GaugeValue, b2f(st == chutes.KeyAccepted), cp.Name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
