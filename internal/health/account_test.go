package health_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
)

func TestParseQuotaUsage(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    health.QuotaUsage
		wantErr bool
	}{
		{"documented", `{"quota":300,"used":15,"chute_id":"*"}`, health.QuotaUsage{Limit: 300, Used: 15, ChuteID: "*"}, false},
		{"used is a float", `{"quota":300,"used":15.0}`, health.QuotaUsage{Limit: 300, Used: 15}, false},
		{"numbers as strings", `{"quota":"2000","used":" 212 "}`, health.QuotaUsage{Limit: 2000, Used: 212}, false},
		{"unlimited", `{"quota":0,"used":7,"chute_id":"*"}`, health.QuotaUsage{Used: 7, ChuteID: "*"}, false},
		{"limit instead of quota", `{"limit":5000,"used":1}`, health.QuotaUsage{Limit: 5000, Used: 1}, false},
		{"used missing", `{"quota":300}`, health.QuotaUsage{Limit: 300}, false},
		{"quota null", `{"quota":null,"used":3}`, health.QuotaUsage{Used: 3}, false},
		{"wrapped in data", `{"data":{"quota":300,"used":299}}`, health.QuotaUsage{Limit: 300, Used: 299}, false},
		{"extra fields", `{"quota":300,"used":1,"chute_id":"*","updated_at":"2026-01-01T00:00:00Z","is_default":true}`, health.QuotaUsage{Limit: 300, Used: 1, ChuteID: "*"}, false},
		{"negative clamps", `{"quota":-1,"used":-4}`, health.QuotaUsage{}, false},
		{"no numbers", `{"chute_id":"*"}`, health.QuotaUsage{}, true},
		{"bool is no number", `{"quota":true,"used":false}`, health.QuotaUsage{}, true},
		{"array", `[{"quota":300}]`, health.QuotaUsage{}, true},
		{"html", `<html>502</html>`, health.QuotaUsage{}, true},
		{"empty", ``, health.QuotaUsage{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := health.ParseQuotaUsage([]byte(tt.body))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("ParseQuotaUsage(%s) = %+v, %v; want %+v, error %v", tt.body, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseBalance(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    float64
		ok      bool
		wantErr bool
	}{
		{"float", `{"user_id":"u","username":"x","balance":10.5}`, 10.5, true, false},
		{"int", `{"balance":0}`, 0, true, false},
		{"string with dollar", `{"balance":"$1,234.50"}`, 1234.5, true, false},
		{"nested", `{"data":{"balance":"3.25"}}`, 3.25, true, false},
		{"missing", `{"username":"x"}`, 0, false, false},
		{"null", `{"balance":null}`, 0, false, false},
		{"garbage value", `{"balance":"lots"}`, 0, false, false},
		{"not json", `nope`, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := health.ParseBalance([]byte(tt.body))
			if got != tt.want || ok != tt.ok || (err != nil) != tt.wantErr {
				t.Fatalf("ParseBalance(%s) = %v, %v, %v", tt.body, got, ok, err)
			}
		})
	}
}

// TestCheckAccount asks a fake account API over loopback.
func TestCheckAccount(t *testing.T) {
	const key = "cpk_account_test_0123456789"
	tests := []struct {
		name                 string
		quotaCode            int
		quotaBody            string
		userCode             int
		userBody             string
		wantState            string
		wantQuota            bool
		wantBalance          bool
		wantErr, wantSummary string
	}{
		{"both answer", 200, `{"quota":300,"used":212,"chute_id":"*"}`, 200, `{"balance":10.5}`,
			health.KeyAccepted, true, true, "", "212 of 300 requests used today (resets at 00:00 UTC, in "},
		{"quota used up, no balance", 200, `{"quota":300,"used":300}`, 200, `{"balance":0.0}`,
			health.KeyAccepted, true, true, "", "300 of 300 requests used today: the daily quota is used up"},
		{"only the user answers", 404, `{"detail":"Not Found"}`, 200, `{"balance":"2.00"}`,
			health.KeyAccepted, false, true, "", "balance $2.00"},
		{"401 is a rejected key", 401, `{"detail":"Invalid token."}`, 401, `{"detail":"Invalid token."}`,
			health.KeyRejected, false, false, "the account API answered 401: Invalid token.", ""},
		{"403 is a rejected key", 403, `{"detail":"Forbidden"}`, 403, `{"detail":"Forbidden"}`,
			health.KeyRejected, false, false, "answered 403: Forbidden", ""},
		{"403 after an accepted call is not", 200, `{"quota":300,"used":1}`, 403, `{"detail":"Forbidden"}`,
			health.KeyAccepted, true, false, "", "1 of 300 requests used today"},
		{"server trouble", 502, `<html>bad gateway</html>`, 500, `oops`,
			health.KeyUnknown, false, false, "answered 502", ""},
		{"garbage with 200", 200, `<html>hi</html>`, 200, `{"username":"x"}`,
			health.KeyAccepted, false, false, "not a JSON object", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAccount(t)
			f.set(tt.quotaCode, tt.quotaBody, tt.userCode, tt.userBody)
			client := f.server.Client()
			defer client.CloseIdleConnections()
			a := health.CheckAccount(context.Background(), client, f.server.URL+"/", key)
			if a.KeyState != tt.wantState || a.HasQuota != tt.wantQuota || a.HasBalance != tt.wantBalance || !strings.Contains(a.Error, tt.wantErr) {
				t.Fatalf("account = %+v", a)
			}
			if tt.wantErr == "" && a.Error != "" {
				t.Fatalf("unexpected error %q", a.Error)
			}
			if got := a.Summary(0, time.Now()); !strings.Contains(got, tt.wantSummary) || (tt.wantSummary == "") != (got == "") {
				t.Fatalf("summary %q, want it to contain %q", got, tt.wantSummary)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for _, h := range f.auth {
				if h != "Bearer "+key {
					t.Fatalf("Authorization %q", h)
				}
			}
			if strings.Contains(a.Error, key) {
				t.Fatalf("the key leaked into the error: %q", a.Error)
			}
		})
	}
}

func TestCheckAccountUnreachable(t *testing.T) {
	a := health.CheckAccount(context.Background(), &http.Client{}, "http://127.0.0.1:1", "cpk_x_0123456789")
	if a.KeyState != health.KeyUnknown || !strings.Contains(a.Error, "connection failed") {
		t.Fatalf("account = %+v", a)
	}
}

func TestAccountSummaryTakesTheLargerCount(t *testing.T) {
	now := time.Date(2026, 3, 4, 18, 48, 0, 0, time.UTC)
	a := health.Account{KeyState: health.KeyAccepted, HasQuota: true, QuotaLimit: 300, QuotaUsed: 200, HasBalance: true, Balance: 0}
	got := a.Summary(212, now)
	want := "212 of 300 requests used today (resets at 00:00 UTC, in 5h12m); balance $0.00 (no pay-as-you-go credit)"
	if got != want {
		t.Fatalf("Summary =\n%q, want\n%q", got, want)
	}
	if a.QuotaExhausted(299) || !a.QuotaExhausted(300) {
		t.Fatal("QuotaExhausted")
	}
}

// TestKeyRejectedIsKnownBeforeAnyChat: with the account API answering 401,
// the first probe makes /status say the key is rejected, before any chat.
func TestKeyRejectedIsKnownBeforeAnyChat(t *testing.T) {
	f := newFakeAccount(t)
	f.set(401, `{"detail":"Invalid token."}`, 401, `{"detail":"Invalid token."}`)
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.AccountURL = f.server.URL
		c.Health.ProbeInterval = config.Duration(time.Hour)
	})
	h.mon.ProbeNow(context.Background())
	s := h.status(t)
	if s.Key.State != health.KeyRejected || s.Level != health.LevelError || s.Account != nil {
		t.Fatalf("key %+v level %s account %+v", s.Key, s.Level, s.Account)
	}
	if !strings.HasPrefix(s.Headline, "Chutes rejected your key cpk_he…") || !strings.Contains(s.Headline, "Invalid token.") {
		t.Fatalf("headline %q", s.Headline)
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
	h.mon.ProbeNow(context.Background())
	s := h.status(t)
	a := s.Account
	if s.Key.State != health.KeyAccepted || a == nil || *a.QuotaLimit != 300 || *a.QuotaUsed != 240 || *a.UsedToday != 240 || *a.Balance != 1.25 {
		t.Fatalf("key %+v account %+v", s.Key, a)
	}
	if len(s.Warnings) != 1 || s.Warnings[0] != "240 of Chutes' 300 daily requests used" {
		t.Fatalf("warnings %q", s.Warnings)
	}
	if got := h.mon.AccountSummary(); !strings.HasPrefix(got, "240 of 300 requests used today") || !strings.HasSuffix(got, "balance $1.25") {
		t.Fatalf("AccountSummary %q", got)
	}

	f.set(200, `{"quota":300,"used":300}`, 200, `{"balance":0}`)
	h.mon.ProbeNow(context.Background())
	s = h.status(t)
	if s.Level != health.LevelError || !strings.Contains(s.Headline, "Chutes' daily quota is used up (300 of 300, resets at 00:00 UTC) and the balance is $0.00") {
		t.Fatalf("level %s headline %q", s.Level, s.Headline)
	}

	f.set(503, `busy`, 503, `busy`)
	h.mon.ProbeNow(context.Background())
	s = h.status(t)
	if s.Key.State != health.KeyAccepted || s.Account == nil || *s.Account.QuotaUsed != 300 || !strings.Contains(s.Account.Error, "answered 503") {
		t.Fatalf("after a failed check: key %+v account %+v", s.Key, s.Account)
	}
	resp, err := h.client.Get(h.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`chutes_proxy_quota_used{source="chutes"} 300`, `chutes_proxy_quota_limit{source="chutes"} 300`, "chutes_proxy_account_balance_dollars 0", "chutes_proxy_key_accepted 1"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestQuotaLimit(t *testing.T) {
	tests := []struct {
		body           string
		limit          float64
		unlimited, set bool
	}{
		{`{"quota":300,"used":15}`, 300, false, true},
		{`{"quota":0,"used":7}`, 0, true, true},
		{`{"quota":"unlimited"}`, 0, true, true},
		{`{"limit":"Unlimited","used":1}`, 0, true, true},
		{`{"data":{"quota":50,"used":1}}`, 50, false, true},
		{`{"used":3}`, 0, false, false},
		{`<html>`, 0, false, false},
	}
	for _, tt := range tests {
		limit, unlimited, set := health.QuotaLimit([]byte(tt.body))
		if limit != tt.limit || unlimited != tt.unlimited || set != tt.set {
			t.Errorf("QuotaLimit(%s) = %v, %v, %v; want %v, %v, %v", tt.body, limit, unlimited, set, tt.limit, tt.unlimited, tt.set)
		}
	}
	if _, err := health.ParseQuotaUsage([]byte(`{}`)); !errors.Is(err, health.ErrNoQuota) {
		t.Errorf("ParseQuotaUsage({}) = %v, want ErrNoQuota", err)
	}
}
