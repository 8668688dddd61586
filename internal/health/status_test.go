package health_test

import (
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// TestStatusFollowsAFailingModel drives the chain's first model from
// healthy to down through the proxy over loopback and checks that /status
// says so at each step: breaker state, availability, success rate,
// latency, last error, where the chain's requests go, and the headline.
func TestStatusFollowsAFailingModel(t *testing.T) {
	h := newHarness(t)
	steps := []struct {
		name     string
		behavior *simulator.Behavior // set on mHead before the requests
		requests int
		wantCode int
		wantBy   string
		check    func(t *testing.T, s health.Status)
	}{
		{
			name: "before any request",
			check: func(t *testing.T, s health.Status) {
				m := model(t, s, mHead)
				if m.State != "closed" || !m.Available || m.SuccessRate != nil || m.LatencyP50MS != nil || m.Requests != 0 || m.LastError != nil {
					t.Fatalf("fresh model: %+v", m)
				}
				if got := len(s.Models); got != 3 {
					t.Fatalf("%d models, want the chain's 3", got)
				}
				if m.Aliases[0] != "auto" || len(m.InChains) != 1 || m.InChains[0] != mHead {
					t.Fatalf("aliases %v in_chains %v", m.Aliases, m.InChains)
				}
				if s.Chains[0].Serving != mHead || len(s.Chains[0].Chain) != 3 {
					t.Fatalf("chains: %+v", s.Chains)
				}
				if s.Upstream.Reachable != nil || s.Key.State != health.KeyUnchecked || s.Key.Prefix != config.Redact(testKey) {
					t.Fatalf("upstream %+v key %+v", s.Upstream, s.Key)
				}
			},
		},
		{
			name: "healthy", requests: 2, wantCode: 200, wantBy: mHead,
			check: func(t *testing.T, s health.Status) {
				m := model(t, s, mHead)
				if m.SuccessRate == nil || *m.SuccessRate != 1 || m.LatencyP50MS == nil || m.LatencyP95MS == nil || m.Requests != 2 || m.RequestsTotal != 2 {
					t.Fatalf("healthy model: %+v", m)
				}
				if s.Level != health.LevelOK {
					t.Fatalf("level %s", s.Level)
				}
				hasAll(t, s.Headline, "3 models", "available")
				if s.Quota == nil || s.Quota.Count != 2 {
					t.Fatalf("proxy quota: %+v", s.Quota)
				}
			},
		},
		{
			name: "down: the breaker opens after 3 failures", behavior: &simulator.Behavior{Kind: simulator.KindDown},
			requests: 3, wantCode: 200, wantBy: mBack,
			check: func(t *testing.T, s health.Status) {
				m := model(t, s, mHead)
				if m.State != "open" || m.Available || m.OpenUntil == nil || !strings.Contains(m.WhyUnavailable, "circuit open") {
					t.Fatalf("down model: %+v", m)
				}
				if m.LastError == nil || m.LastError.Status != 503 || !strings.Contains(m.LastError.Reason, "No instances available") {
					t.Fatalf("last error: %+v", m.LastError)
				}
				if m.SuccessRate == nil || *m.SuccessRate != 0.4 || m.Requests != 5 || m.Failures != 3 {
					t.Fatalf("rate %v requests %d failures %d", *m.SuccessRate, m.Requests, m.Failures)
				}
				if s.Chains[0].Serving != mBack {
					t.Fatalf("serving %q, want %s", s.Chains[0].Serving, mBack)
				}
				if s.Level != health.LevelWarn {
					t.Fatalf("level %s", s.Level)
				}
				hasAll(t, s.Headline, mHead, "down", "no instances available", mBack)
				if b := model(t, s, mBack); b.Requests != 3 || *b.SuccessRate != 1 {
					t.Fatalf("fallback: %+v", b)
				}
			},
		},
		{
			name: "open breaker: skipped without an upstream call", requests: 2, wantCode: 200, wantBy: mBack,
			check: func(t *testing.T, s health.Status) {
				if m := model(t, s, mHead); m.Requests != 5 {
					t.Fatalf("an open model was called: %+v", m)
				}
				if s.Quota.Count != 10 {
					t.Fatalf("proxy count %d, want 10 upstream attempts", s.Quota.Count)
				}
			},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.behavior != nil {
				h.sim.SetBehavior(mHead, *st.behavior)
			}
			for range st.requests {
				code, by := h.chat(t, "auto")
				if code != st.wantCode || by != st.wantBy {
					t.Fatalf("chat: %d by %q, want %d by %q", code, by, st.wantCode, st.wantBy)
				}
			}
			st.check(t, h.status(t))
		})
	}
}

func TestStatusWholeChainDown(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{mHead, mBack, mLast} {
		h.sim.SetBehavior(id, simulator.Behavior{Kind: simulator.KindDown})
	}
	for range 3 {
		if code, _ := h.chat(t, "auto"); code != 503 {
			t.Fatalf("chat: %d, want 503", code)
		}
	}
	s := h.status(t)
	if s.Level != health.LevelError || s.Chains[0].Serving != "" {
		t.Fatalf("level %s chains %+v", s.Level, s.Chains)
	}
	hasAll(t, s.Headline, mHead, "no fallback")
}

// TestStatusUpstreamAndListing probes the simulator: reachability, the
// model list, and a configured model Chutes does not list.
func TestStatusUpstreamAndListing(t *testing.T) {
	const ghost = "org/not-served-anywhere"
	h := newHarness(t, func(c *config.Config) {
		c.Models = append(c.Models, config.Model{ID: ghost})
	})
	r := h.probe()
	if !r.OK() || r.Models != 3 || r.Status != 200 || r.ConnectMS == nil || r.TTFBMS == nil {
		t.Fatalf("probe: %+v", r)
	}
	s := h.status(t)
	if s.Upstream.Reachable == nil || !*s.Upstream.Reachable || s.Upstream.Probe.Models != 3 {
		t.Fatalf("upstream %+v", s.Upstream)
	}
	hasAll(t, s.Headline, "reachable")
	g := model(t, s, ghost)
	if g.Available || g.Listed == nil || *g.Listed || g.WhyUnavailable != "not in Chutes' model list" {
		t.Fatalf("unlisted model: %+v", g)
	}
	if m := model(t, s, mHead); m.Listed == nil || !*m.Listed || m.ContextLength != simulator.DefaultContextLength {
		t.Fatalf("listed model: %+v", m)
	}
	hasAll(t, s.Headline, ghost, "not listed", "no fallback")
}

// TestStatusQuotaWarnings covers the proxy's own cap at 80 % and at the
// limit, where the Gate answers 429 and /status says why.
func TestStatusQuotaWarnings(t *testing.T) {
	h := newHarness(t, func(c *config.Config) { c.Quota.DailyRequests = 5 })
	for range 4 {
		if code, _ := h.chat(t, mBack); code != 200 {
			t.Fatalf("chat: %d", code)
		}
	}
	s := h.status(t)
	if s.Quota.Percent != 80 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "80%") || s.Level != health.LevelWarn {
		t.Fatalf("at 80%%: quota %+v warnings %v level %s", s.Quota, s.Warnings, s.Level)
	}
	h.chat(t, mBack)
	if code, _ := h.chat(t, mBack); code != 429 {
		t.Fatalf("at the limit: %d, want 429", code)
	}
	s = h.status(t)
	if !s.Quota.Exhausted || s.Level != health.LevelError {
		t.Fatalf("exhausted: quota %+v level %s", s.Quota, s.Level)
	}
	hasAll(t, s.Headline, "proxy's own daily quota", "5 of 5")
}
