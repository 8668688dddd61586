package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// TestMetricsExposition drives traffic through the proxy and checks that
// GET /metrics has every series in Prometheus text format.
func TestMetricsExposition(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Quota.DailyRequests = 100 })
	h.sim.SetBehavior(mHead, simulator.Behavior{Kind: simulator.KindDown})
	for range 4 {
		h.chat(t, "auto")
	}
	// A limiter skip, as the router reports it.
	h.mon.Attempted(mLast, failover.Attempt{Model: mLast, Kind: failover.KindLocalLimit, RetryAfter: time.Second}, 0)

	body, hdr := h.get(t, "/metrics")
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q", ct)
	}
	for _, want := range []string{
		`chutes_proxy_requests_total{model="Qwen/Qwen2.5-72B-Instruct",outcome="served"} 4`,
		`chutes_proxy_attempts_total{kind="failed",model="deepseek-ai/DeepSeek-R1"} 3`,
		`chutes_proxy_attempts_total{kind="served",model="Qwen/Qwen2.5-72B-Instruct"} 4`,
		`chutes_proxy_attempts_total{kind="local_limit",model="chutesai/Mistral-Small-3.1-24B-Instruct-2503"} 1`,
		`chutes_proxy_failovers_total{from="deepseek-ai/DeepSeek-R1",to="Qwen/Qwen2.5-72B-Instruct"} 4`, // 3 failures, then a breaker skip
		`chutes_proxy_limiter_skips_total{model="chutesai/Mistral-Small-3.1-24B-Instruct-2503"} 1`,
		`chutes_proxy_breaker_state{model="deepseek-ai/DeepSeek-R1"} 2`,
		`chutes_proxy_breaker_state{model="Qwen/Qwen2.5-72B-Instruct"} 0`,
		`chutes_proxy_model_available{model="deepseek-ai/DeepSeek-R1"} 0`,
		`chutes_proxy_ttfb_seconds_count{model="Qwen/Qwen2.5-72B-Instruct"} 4`,
		`chutes_proxy_ttfb_seconds_bucket{model="Qwen/Qwen2.5-72B-Instruct",le="+Inf"} 4`,
		`chutes_proxy_quota_used{source="proxy"} 7`,
		`chutes_proxy_quota_limit{source="proxy"} 100`,
		"# TYPE chutes_proxy_ttfb_seconds histogram",
		"go_goroutines ",
		"go_memstats_alloc_bytes ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "secretpart") {
		t.Fatal("/metrics shows the key")
	}
	// The exposition parses as Prometheus text with legacy (strict) names,
	// and help text is there for every family of ours.
	parser := expfmt.NewTextParser(pmodel.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for name, f := range families {
		if strings.HasPrefix(name, "chutes_proxy_") && f.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
	}
	newHarness(t) // a second Monitor registers without a clash: no globals
}

// TestMetricLabelsAreBounded: models a client invents are tracked up to a
// bound, then counted as "other".
func TestMetricLabelsAreBounded(t *testing.T) {
	h := newHarness(t)
	for i := range 300 {
		id := "junk/model-" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		h.mon.Attempted(id, failover.Attempt{Model: id, Kind: failover.KindFailed, Status: 404}, time.Millisecond)
	}
	h.mon.Attempted(mHead, failover.Attempt{Model: mHead, Kind: failover.KindServed, Status: 200}, time.Millisecond)
	body, _ := h.get(t, "/metrics")
	if !strings.Contains(body, `chutes_proxy_attempts_total{kind="failed",model="other"}`) {
		t.Fatal("no \"other\" label beyond the bound")
	}
	if !strings.Contains(body, `chutes_proxy_attempts_total{kind="served",model="deepseek-ai/DeepSeek-R1"} 1`) {
		t.Fatal("a configured model lost its label")
	}
	if n := strings.Count(body, "chutes_proxy_attempts_total{"); n > 260 {
		t.Fatalf("%d attempt series", n)
	}
}
