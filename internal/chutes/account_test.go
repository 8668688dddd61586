package chutes

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package if a check leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseQuota(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    Quota
		ok      bool
		wantErr bool
	}{
		{"documented", `{"quota":300,"used":15,"chute_id":"*"}`, Quota{Limit: 300, Used: 15}, true, false},
		{"used is a float", `{"quota":300,"used":15.0}`, Quota{Limit: 300, Used: 15}, true, false},
		{"numbers as strings", `{"quota":"2000","used":" 12.5 "}`, Quota{Limit: 2000, Used: 12.5}, true, false},
		{"quota 0 is unlimited", `{"quota":0,"used":42}`, Quota{Unlimited: true, Used: 42}, true, false},
		{"unlimited spelt out", `{"quota":"unlimited","used":0}`, Quota{Unlimited: true}, true, false},
		{"limit instead of quota", `{"limit":"Unlimited","used":1}`, Quota{Unlimited: true, Used: 1}, true, false},
		{"used missing", `{"quota":300}`, Quota{Limit: 300}, true, false},
		{"no limit reported", `{"used":7}`, Quota{Used: 7}, true, false},
		{"quota null", `{"quota":null,"used":3}`, Quota{Used: 3}, true, false},
		{"wrapped in data", `{"data":{"quota":300,"used":299}}`, Quota{Limit: 300, Used: 299}, true, false},
		{"negative clamps", `{"quota":-1,"used":-4}`, Quota{Unlimited: true}, true, false},
		{"nothing reported", `{"chute_id":"*"}`, Quota{}, false, false},
		{"bool is no number", `{"quota":true,"used":false}`, Quota{}, false, false},
		{"array", `[{"quota":300}]`, Quota{}, false, true},
		{"html", `<html>502</html>`, Quota{}, false, true},
		{"empty", ``, Quota{}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := parseQuota([]byte(tt.body))
			if got != tt.want || ok != tt.ok || (err != nil) != tt.wantErr {
				t.Fatalf("parseQuota(%s) = %+v, %v, %v; want %+v, %v, error %v", tt.body, got, ok, err, tt.want, tt.ok, tt.wantErr)
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
			got, ok, err := parseBalance([]byte(tt.body))
			if got != tt.want || ok != tt.ok || (err != nil) != tt.wantErr {
				t.Fatalf("parseBalance(%s) = %v, %v, %v", tt.body, got, ok, err)
			}
		})
	}
}

// fakeAccount answers quota_usage and users/me as set, and records the
// Authorization headers it saw.
type fakeAccount struct {
	mu                  sync.Mutex
	quotaCode, userCode int
	quotaBody, userBody string
	auth                []string
}

func (f *fakeAccount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	code, body := http.StatusNotFound, `{"detail":"Not Found"}`
	switch r.URL.Path {
	case quotaPath:
		code, body = f.quotaCode, f.quotaBody
	case userPath:
		code, body = f.userCode, f.userBody
	}
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// TestCheckAccount asks a fake account API over loopback.
func TestCheckAccount(t *testing.T) {
	const key = "cpk_account_test_0123456789"
	tests := []struct {
		name             string
		quotaCode        int
		quotaBody        string
		userCode         int
		userBody         string
		state            string
		hasQuota, hasBal bool
		errHas           []string // "" Error when empty
		summaryHas       []string // "" Summary when empty
	}{
		{"both answer", 200, `{"quota":300,"used":212,"chute_id":"*"}`, 200, `{"balance":10.5}`,
			KeyAccepted, true, true, nil, []string{"212 of 300 requests used today", "00:00 UTC", "balance $10.50"}},
		{"quota used up, no balance", 200, `{"quota":300,"used":300}`, 200, `{"balance":0.0}`,
			KeyAccepted, true, true, nil, []string{"300 of 300", "used up", "balance $0.00", "no pay-as-you-go credit"}},
		{"unlimited", 200, `{"quota":"unlimited","used":4}`, 200, `{}`,
			KeyAccepted, true, false, nil, []string{"4 requests used today", "no daily quota"}},
		{"only the user answers", 404, `{"detail":"Not Found"}`, 200, `{"balance":"2.00"}`,
			KeyAccepted, false, true, nil, []string{"balance $2.00"}},
		{"401 is a rejected key", 200, `{"quota":300,"used":1}`, 401, `{"detail":"Invalid token."}`,
			KeyRejected, false, false, []string{"401", "Invalid token."}, nil},
		{"403 from both is a rejected key", 403, `{"detail":"Forbidden"}`, 403, `{"detail":"Forbidden"}`,
			KeyRejected, false, false, []string{"403", "Forbidden"}, nil},
		{"403 beside an accepted call is not", 200, `{"quota":300,"used":1}`, 403, `{"detail":"Forbidden"}`,
			KeyAccepted, true, false, nil, []string{"1 of 300"}},
		{"server trouble", 502, `<html>bad gateway</html>`, 500, `oops`,
			KeyUnknown, false, false, []string{"could not ask", "502", "500"}, nil},
		{"garbage with 200", 200, `<html>hi</html>`, 200, `{"username":"x"}`,
			KeyAccepted, false, false, []string{"not a JSON object"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAccount{quotaCode: tt.quotaCode, quotaBody: tt.quotaBody, userCode: tt.userCode, userBody: tt.userBody}
			srv := httptest.NewServer(f)
			defer srv.Close()
			a := CheckAccount(context.Background(), srv.Client(), srv.URL+"/", key)
			if a.KeyState != tt.state || a.HasQuota != tt.hasQuota || a.HasBalance != tt.hasBal {
				t.Fatalf("account = %+v", a)
			}
			if (len(tt.errHas) == 0) != (a.Error == "") {
				t.Fatalf("Error %q, want one containing %q", a.Error, tt.errHas)
			}
			for _, w := range tt.errHas {
				if !strings.Contains(a.Error, w) {
					t.Errorf("Error %q lacks %q", a.Error, w)
				}
			}
			got := a.Summary(0, time.Now())
			if (len(tt.summaryHas) == 0) != (got == "") {
				t.Fatalf("Summary %q, want one containing %q", got, tt.summaryHas)
			}
			for _, w := range tt.summaryHas {
				if !strings.Contains(got, w) {
					t.Errorf("Summary %q lacks %q", got, w)
				}
			}
			if strings.Contains(a.Error, key) {
				t.Fatalf("the key leaked into the error: %q", a.Error)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.auth) != 2 || f.auth[0] != "Bearer "+key || f.auth[1] != "Bearer "+key {
				t.Fatalf("Authorization headers %q", f.auth)
			}
		})
	}
}

func TestCheckAccountUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	a := CheckAccount(context.Background(), &http.Client{}, srv.URL, "cpk_x_0123456789")
	if a.KeyState != KeyUnknown || !strings.Contains(a.Error, "connection failed") || strings.Count(a.Error, "connection failed") != 1 {
		t.Fatalf("account = %+v, want one connection failure", a)
	}
}

func TestAccountCounts(t *testing.T) {
	now := time.Date(2026, 3, 4, 18, 48, 0, 0, time.UTC)
	a := Account{KeyState: KeyAccepted, HasQuota: true, Quota: Quota{Limit: 300, Used: 200}}
	got := a.Summary(212, now)
	for _, w := range []string{"212 of 300", "5h12m"} {
		if !strings.Contains(got, w) {
			t.Errorf("Summary %q lacks %q: the larger count and the wait until 00:00 UTC", got, w)
		}
	}
	if a.QuotaExhausted(299) || !a.QuotaExhausted(300) || a.QuotaShare(240) != 0.8 {
		t.Fatalf("QuotaExhausted(299) %v, QuotaExhausted(300) %v, QuotaShare(240) %v",
			a.QuotaExhausted(299), a.QuotaExhausted(300), a.QuotaShare(240))
	}
	if u := (Account{HasQuota: true, Quota: Quota{Unlimited: true, Used: 1e6}}); u.QuotaExhausted(0) {
		t.Fatal("an unlimited quota is never used up")
	}
}
