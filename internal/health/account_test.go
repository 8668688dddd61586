package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
)

// TestKeyRejectedIsKnownBeforeAnyChat: with the account API answering 401,
// the first probe makes /status say the key is rejected, before any chat.
func TestKeyRejectedIsKnownBeforeAnyChat(t *testing.T) {
	f := newFakeAccount(t)
	f.set(401, `{"detail":"Invalid token."}`, 401, `{"detail":"Invalid token."}`)
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.AccountURL = f.server.URL
		c.Health.ProbeInterval = config.Duration(time.Hour)
	})
	h.probe()
	s := h.status(t)
	if s.Key.State != chutes.KeyRejected || s.Level != health.LevelError || s.Account != nil {
		t.Fatalf("key %+v level %s account %+v", s.Key, s.Level, s.Account)
	}
	for _, w := range []string{"rejected", "cpk_he…", "401", "Invalid token.", "cpk_"} {
		if !strings.Contains(s.Headline, w) {
			t.Errorf("headline %q lacks %q", s.Headline, w)
		}
	}
	if h.mon.AccountSummary() != "" {
		t.Fatalf("summary of a rejected key: %q", h.mon.AccountSummary())
	}
	for _, p := range []string{"/", "/metrics"} {
		if body, _ := h.get(t, p); strings.Contains(body, testKey) || strings.Contains(body, "secretpart") {
			t.Fatalf("GET %s shows the key", p)
		}
	}
	body, _ := h.get(t, "/metrics")
	if !strings.Contains(body, "chutes_proxy_key_accepted 0") {
		t.Fatal("metrics lack chutes_proxy_key_accepted 0")
	}
}

// TestAccountInStatus: an accepted key's numbers reach /status, the
// summary for payment_required takes the larger count, and a later failed
// check keeps the last numbers with the error.
func TestAccountInStatus(t *testing.T) {
	f := newFakeAccount(t)
	f.set(200, `{"quota":300,"used":240,"chute_id":"*"}`, 200, `{"balance":1.25}`)
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.AccountURL = f.server.URL
		c.Health.ProbeInterval = config.Duration(time.Hour)
	})
	for range 2 {
		h.chat(t, mHead)
	}
	h.probe()
	s := h.status(t)
	a := s.Account
	if s.Key.State != chutes.KeyAccepted || a == nil || *a.QuotaLimit != 300 || *a.QuotaUsed != 240 || *a.UsedToday != 240 || *a.Balance != 1.25 {
		t.Fatalf("key %+v account %+v", s.Key, a)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "240") || !strings.Contains(s.Warnings[0], "300") {
		t.Fatalf("warnings %q, want one with 240 of 300", s.Warnings)
	}
	if got := h.mon.AccountSummary(); !strings.Contains(got, "240 of 300") || !strings.Contains(got, "balance $1.25") {
		t.Fatalf("AccountSummary %q", got)
	}

	f.set(200, `{"quota":300,"used":300}`, 200, `{"balance":0}`)
	h.probe()
	s = h.status(t)
	for _, w := range []string{"quota is used up", "300 of 300", "00:00 UTC", "$0.00"} {
		if s.Level != health.LevelError || !strings.Contains(s.Headline, w) {
			t.Errorf("level %s headline %q lacks %q", s.Level, s.Headline, w)
		}
	}

	f.set(503, `busy`, 503, `busy`)
	h.probe()
	s = h.status(t)
	if s.Key.State != chutes.KeyAccepted || s.Account == nil || *s.Account.QuotaUsed != 300 || !strings.Contains(s.Account.Error, "answered 503") {
		t.Fatalf("after a failed check: key %+v account %+v", s.Key, s.Account)
	}
	body, _ := h.get(t, "/metrics")
	for _, want := range []string{`chutes_proxy_quota_used{source="chutes"} 300`, `chutes_proxy_quota_limit{source="chutes"} 300`, "chutes_proxy_account_balance_dollars 0", "chutes_proxy_key_accepted 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
