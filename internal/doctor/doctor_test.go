package doctor_test

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/doctor"
)

// TestMain fails the package if a run leaves a goroutine behind: Run
// promises that nothing it started outlives it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// get returns the result of the named check, if it ran.
func get(rep *doctor.Report, check string) (doctor.Result, bool) {
	for _, res := range rep.Results {
		if res.Check == check {
			return res, true
		}
	}
	return doctor.Result{}, false
}

// want is what one check must say: its level and words its line contains.
type want struct {
	level doctor.Level
	has   []string
}

func TestDoctorChecks(t *testing.T) {
	tests := []struct {
		name     string
		change   func(t *testing.T, s *setup)
		want     map[string]want
		notRun   []string // checks that must not print a line
		failures int
	}{
		{
			name: "good setup",
			change: func(t *testing.T, s *setup) {
				s.live = true
			},
			want: map[string]want{
				doctor.CheckConfig:   {doctor.OK, []string{"is valid", "1 model configured"}},
				doctor.CheckKey:      {doctor.OK, []string{"cpk_01…", "starts with cpk_"}},
				doctor.CheckBaseURL:  {doctor.OK, []string{"https://llm.chutes.ai/v1"}},
				doctor.CheckDNS:      {doctor.OK, []string{"llm.chutes.ai → 127.0.0.1", "system resolver"}},
				doctor.CheckTCP:      {doctor.OK, []string{"connected to llm.chutes.ai:443"}},
				doctor.CheckTLS:      {doctor.OK, []string{"TLS 1.3", "fake Chutes"}},
				doctor.CheckModels:   {doctor.OK, []string{"answered 200", "3 models"}},
				doctor.CheckAccount:  {doctor.OK, []string{"key accepted", "212 of 300 requests used today", "00:00 UTC", "balance $10.50"}},
				doctor.CheckModelIDs: {doctor.OK, []string{"all 2 configured models and fallbacks are listed"}},
				doctor.CheckListen:   {doctor.OK, []string{"is free"}},
				doctor.CheckLive:     {doctor.OK, []string{"deepseek-ai/DeepSeek-R1 answered a 1-token completion", "daily quota"}},
			},
		},
		{
			name: "rejected key",
			change: func(t *testing.T, s *setup) {
				s.fake.accountCode = http.StatusUnauthorized
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.Fail, []string{"Chutes rejected the API key cpk_01…", "Invalid token.", "start with cpk_", "regenerate one on the Chutes dashboard"}},
			},
			failures: 1,
		},
		{
			name: "missing model",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, `id = "deepseek-ai/DeepSeek-R1"`, `id = "deepseek-ai/deepseek-r1"`, 1)
			},
			want: map[string]want{
				doctor.CheckModelIDs: {doctor.Fail, []string{`Chutes does not list "deepseek-ai/deepseek-r1" (models[0].id; did you mean deepseek-ai/DeepSeek-R1?)`, "fix the id in proxy.toml"}},
			},
			failures: 1,
		},
		{
			name: "missing fallback",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, `"Qwen/Qwen2.5-72B-Instruct"`, `"Qwen/Qwen2.5-72B-Instruc"`, 1)
			},
			want: map[string]want{
				doctor.CheckModelIDs: {doctor.Fail, []string{`"Qwen/Qwen2.5-72B-Instruc" (models[0].fallbacks; did you mean Qwen/Qwen2.5-72B-Instruct?)`}},
			},
			failures: 1,
		},
		{
			name: "only the system resolver fails",
			change: func(t *testing.T, s *setup) {
				s.system = brokenDNS("192.168.1.1:53")
			},
			want: map[string]want{
				doctor.CheckDNS: {doctor.Fail, []string{"only the system resolver fails", "but 1.1.1.1:53 can", `[upstream] resolver = "1.1.1.1:53"`}},
				// The checks after it go through the resolver that works.
				doctor.CheckTCP:    {doctor.OK, nil},
				doctor.CheckModels: {doctor.OK, nil},
			},
			failures: 1,
		},
		{
			name: "every resolver fails",
			change: func(t *testing.T, s *setup) {
				s.system = brokenDNS("192.168.1.1:53")
				s.public = nil
			},
			want: map[string]want{
				doctor.CheckDNS:      {doctor.Fail, []string{"no resolver could resolve llm.chutes.ai", "server misbehaving", "turn off a VPN"}},
				doctor.CheckTCP:      {doctor.Warn, []string{"not tried"}},
				doctor.CheckTLS:      {doctor.Warn, []string{"not tried"}},
				doctor.CheckModels:   {doctor.Warn, []string{"not tried"}},
				doctor.CheckAccount:  {doctor.Warn, []string{"could not ask", "see dns above"}},
				doctor.CheckModelIDs: {doctor.Warn, []string{"not checked"}},
			},
			failures: 1,
		},
		{
			name: "a misspelt host does not exist anywhere",
			change: func(t *testing.T, s *setup) {
				nx := doctor.Resolver(resolverFunc(func(ctx context.Context, host string) ([]string, error) {
					return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
				}))
				s.system = nx
				s.public = map[string]doctor.Resolver{"1.1.1.1:53": nx, "8.8.8.8:53": nx}
				s.toml = strings.Replace(s.toml, "https://llm.chutes.ai/v1", "https://llm.chutess.example/v1", 1)
			},
			want: map[string]want{
				doctor.CheckBaseURL: {doctor.Warn, []string{"is not Chutes' API"}},
				doctor.CheckDNS:     {doctor.Fail, []string{"llm.chutess.example does not exist", "check the host in base_url"}},
			},
			failures: 1,
		},
		{
			name: "the configured resolver fails",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, "[upstream]\n", "[upstream]\nresolver = \"9.9.9.9:53\"\n", 1)
			},
			want: map[string]want{
				doctor.CheckDNS: {doctor.Fail, []string{"upstream.resolver 9.9.9.9:53 cannot resolve llm.chutes.ai", "but the system resolver can", `resolver = ""`}},
			},
			failures: 1,
		},
		{
			name: "the configured resolver works",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, "[upstream]\n", "[upstream]\nresolver = \"1.1.1.1:53\"\n", 1)
				s.system = brokenDNS("192.168.1.1:53")
			},
			want: map[string]want{
				doctor.CheckDNS: {doctor.OK, []string{"(upstream.resolver 1.1.1.1:53)"}},
			},
		},
		{
			name: "untrusted certificate",
			change: func(t *testing.T, s *setup) {
				s.roots = x509.NewCertPool()
			},
			want: map[string]want{
				doctor.CheckTLS:     {doctor.Fail, []string{"signed by an unknown authority", "fake Chutes", "intercepts HTTPS"}},
				doctor.CheckModels:  {doctor.Warn, []string{"not tried"}},
				doctor.CheckAccount: {doctor.Warn, []string{"could not ask", "certificate"}},
			},
			failures: 1,
		},
		{
			name: "the clock is behind",
			change: func(t *testing.T, s *setup) {
				s.now = func() time.Time { return chutesCert(t).leaf.NotBefore.Add(-48 * time.Hour) }
			},
			want: map[string]want{
				doctor.CheckTLS: {doctor.Fail, []string{"not yet valid", "this machine's clock says", "set it right"}},
			},
			failures: 1,
		},
		{
			name: "the clock is ahead",
			change: func(t *testing.T, s *setup) {
				s.now = func() time.Time { return chutesCert(t).leaf.NotAfter.Add(72 * time.Hour) }
			},
			want: map[string]want{
				doctor.CheckTLS: {doctor.Fail, []string{"has expired", "this machine's clock says", "system clock"}},
			},
			failures: 1,
		},
		{
			name: "quota used up",
			change: func(t *testing.T, s *setup) {
				s.fake.quota = `{"quota":300,"used":300,"chute_id":"*"}`
				s.fake.me = `{"balance":0}`
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.Fail, []string{"quota is used up", "300 of 300 requests used today", "balance $0.00", "00:00 UTC"}},
			},
			failures: 1,
		},
		{
			name: "80 percent of the quota used",
			change: func(t *testing.T, s *setup) {
				s.fake.quota = `{"quota":300,"used":250.0}`
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.Warn, []string{"83% of today's quota is gone", "250 of 300 requests used today", "balance $10.50"}},
			},
		},
		{
			name: "unlimited quota, as free accounts get",
			change: func(t *testing.T, s *setup) {
				s.fake.quota = `{"quota":"unlimited","used":0}`
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.OK, []string{"key accepted", "no daily quota", "balance $10.50"}},
			},
		},
		{
			name: "a quota answer without a limit",
			change: func(t *testing.T, s *setup) {
				s.fake.quota = `{"used":7}`
				s.fake.me = `{"username":"someone"}`
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.OK, []string{"key accepted", "7 requests used today", "no limit reported"}},
			},
		},
		{
			name: "account API off",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, `account_url = "https://api.chutes.ai"`, `account_url = ""`, 1)
			},
			want: map[string]want{
				doctor.CheckAccount: {doctor.Warn, []string{"account_url = \"\"", "--live"}},
			},
		},
		{
			name: "no key, no proxy_key",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, `api_key = "cpk_0123456789abcdef.0123456789abcdef"`, `api_key = ""`, 1)
			},
			want: map[string]want{
				doctor.CheckKey:     {doctor.Warn, []string{"forwards each app's own key", `[upstream] api_key = "cpk_..."`, "CHUTES_API_KEY"}},
				doctor.CheckAccount: {doctor.Warn, []string{"no key configured"}},
			},
		},
		{
			name: "no key, but a proxy_key",
			change: func(t *testing.T, s *setup) {
				s.toml = strings.Replace(s.toml, `api_key = "cpk_0123456789abcdef.0123456789abcdef"`, `api_key = ""`, 1)
				s.toml = `proxy_key = "local-secret-123"` + "\n" + s.toml
			},
			want: map[string]want{
				doctor.CheckKey: {doctor.Fail, []string{"proxy_key is set", "never sent to Chutes", "CHUTES_API_KEY"}},
			},
			failures: 1,
		},
		{
			name: "a key that is not a Chutes key",
			change: func(t *testing.T, s *setup) {
				s.env["CHUTES_API_KEY"] = "sk-proj-0123456789abcdef"
			},
			want: map[string]want{
				doctor.CheckKey: {doctor.Fail, []string{"sk-pro… (from env CHUTES_API_KEY) does not start with cpk_"}},
			},
			failures: 1,
		},
		{
			name: "a key pasted with quotes",
			change: func(t *testing.T, s *setup) {
				s.env["CHUTES_API_KEY"] = " \"cpk_0123456789abcdef.0123456789abcdef\"\n"
			},
			want: map[string]want{
				doctor.CheckConfig: {doctor.OK, nil},
				doctor.CheckKey:    {doctor.Warn, []string{"cpk_01… (from env CHUTES_API_KEY) had white space or quotes around it", "trims"}},
			},
		},
		{
			name: "outdated base_url",
			change: func(t *testing.T, s *setup) {
				s.env["CHUTES_PROXY_UPSTREAM"] = "https://api.chutes.ai/v1"
			},
			want: map[string]want{
				doctor.CheckBaseURL: {doctor.Fail, []string{"(from env CHUTES_PROXY_UPSTREAM)", "account API, not the LLM endpoint", "unset CHUTES_PROXY_UPSTREAM"}},
			},
			failures: 1,
		},
		{
			name: "config problems stop the run",
			change: func(t *testing.T, s *setup) {
				s.toml += "\n[upstream]\nconnect_timeout = 10\n"
				s.toml = strings.Replace(s.toml, "[upstream]\nbase_url", "[upstreem]\nbase_url", 1)
			},
			want: map[string]want{
				doctor.CheckConfig: {doctor.Fail, []string{"problem(s)", "check-config"}},
			},
			notRun:   []string{doctor.CheckKey, doctor.CheckDNS},
			failures: 1,
		},
		{
			name: "Chutes answers 503 for /models",
			change: func(t *testing.T, s *setup) {
				s.fake.modelsStatus = http.StatusServiceUnavailable
			},
			want: map[string]want{
				doctor.CheckModels:   {doctor.Warn, []string{"answered 503", "Chutes' side"}},
				doctor.CheckModelIDs: {doctor.Warn, []string{"not checked"}},
			},
		},
		{
			name: "/models is not found: the wrong URL",
			change: func(t *testing.T, s *setup) {
				s.fake.modelsStatus = http.StatusNotFound
			},
			want: map[string]want{
				doctor.CheckModels: {doctor.Fail, []string{"404", "base_url looks wrong", "https://llm.chutes.ai/v1"}},
			},
			failures: 1,
		},
		{
			name: "live: payment required",
			change: func(t *testing.T, s *setup) {
				s.live = true
				s.fake.chatStatus = http.StatusPaymentRequired
				s.fake.chatBody = `{"detail":"Quota exceeded and account balance is $0.0"}`
			},
			want: map[string]want{
				doctor.CheckLive: {doctor.Fail, []string{"answered 402", "balance or daily request quota is used up", "Chutes reports: 212 of 300 requests used today"}},
			},
			failures: 1,
		},
		{
			name: "live: key rejected",
			change: func(t *testing.T, s *setup) {
				s.live = true
				s.fake.chatStatus = http.StatusUnauthorized
				s.fake.chatBody = `{"detail":"Invalid API key"}`
			},
			want: map[string]want{
				doctor.CheckLive: {doctor.Fail, []string{"Chutes rejected the API key cpk_01…", "Invalid API key"}},
			},
			failures: 1,
		},
		{
			name: "live: the model is down (Chutes' side)",
			change: func(t *testing.T, s *setup) {
				s.live = true
				s.fake.chatStatus = http.StatusServiceUnavailable
				s.fake.chatBody = `{"detail":"No instances available (yet) for chute_id='x'"}`
			},
			want: map[string]want{
				doctor.CheckLive: {doctor.Warn, []string{"answered 503", "No instances available", "Chutes' side"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSetup(t)
			tt.change(t, s)
			rep, out := s.run(t)
			for check, w := range tt.want {
				res, ran := get(rep, check)
				if !ran {
					t.Errorf("%s did not run", check)
					continue
				}
				if res.Level != w.level {
					t.Errorf("%s: level %s, want %s: %s", check, res.Level, w.level, res.Msg)
				}
				for _, h := range w.has {
					if !strings.Contains(res.Msg, h) {
						t.Errorf("%s: %q lacks %q", check, res.Msg, h)
					}
				}
			}
			for _, check := range tt.notRun {
				if res, ran := get(rep, check); ran {
					t.Errorf("%s ran: %q", check, res.Msg)
				}
			}
			if got := rep.Failures(); got != tt.failures {
				t.Errorf("failures = %d, want %d", got, tt.failures)
			}
			verdict := "Everything looks fine: if chats still fail, it is on Chutes' side"
			if tt.failures == 1 {
				verdict = "1 problem on your side: fix the FAIL line above"
			}
			if !strings.HasSuffix(out, verdict+"\n") {
				t.Errorf("output does not end with %q", verdict)
			}
			if strings.Contains(out, "0123456789abcdef") {
				t.Error("the output shows the key")
			}
		})
	}
}

// TestDoctorGoodSetupAllOK checks that a healthy world gives nothing but ok
// lines, in the documented order.
func TestDoctorGoodSetupAllOK(t *testing.T) {
	s := newSetup(t)
	s.live = true
	rep, _ := s.run(t)
	order := []string{doctor.CheckConfig, doctor.CheckKey, doctor.CheckBaseURL, doctor.CheckDNS, doctor.CheckTCP, doctor.CheckTLS,
		doctor.CheckModels, doctor.CheckAccount, doctor.CheckModelIDs, doctor.CheckListen, doctor.CheckLive}
	if len(rep.Results) != len(order) {
		t.Fatalf("%d results, want %d", len(rep.Results), len(order))
	}
	for i, res := range rep.Results {
		if res.Check != order[i] {
			t.Errorf("line %d is %s, want %s", i+1, res.Check, order[i])
		}
		if res.Level != doctor.OK {
			t.Errorf("%s: %s %s", res.Check, res.Level, res.Msg)
		}
	}
	// The live request is the smallest there is, with the configured key.
	if len(s.fake.chats) != 1 {
		t.Fatalf("%d completions sent, want 1", len(s.fake.chats))
	}
	c := s.fake.chats[0]
	if c["max_tokens"] != float64(1) || c["stream"] != false || c["model"] != "deepseek-ai/DeepSeek-R1" {
		t.Errorf("live request = %v", c)
	}
	if c["authorization"] != "Bearer cpk_0123456789abcdef.0123456789abcdef" {
		t.Errorf("live request's Authorization = %q", c["authorization"])
	}
	for _, a := range s.fake.auths {
		if a != "Bearer cpk_0123456789abcdef.0123456789abcdef" {
			t.Errorf("account API's Authorization = %q", a)
		}
	}
}

// TestDoctorNoLiveNoCompletion: without --live, nothing is spent.
func TestDoctorNoLiveNoCompletion(t *testing.T) {
	s := newSetup(t)
	rep, _ := s.run(t)
	if _, ran := get(rep, doctor.CheckLive); ran {
		t.Error("the live check ran without --live")
	}
	if len(s.fake.chats) != 0 {
		t.Errorf("%d completions sent without --live", len(s.fake.chats))
	}
}

func TestDoctorListen(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		level   doctor.Level
		has     []string
	}{
		{
			name: "held by a running chutes-proxy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/healthz" {
					_, _ = io.WriteString(w, "ok\n")
					return
				}
				http.NotFound(w, r)
			},
			level: doctor.OK,
			has:   []string{"a chutes-proxy that is already running there"},
		},
		{
			name:    "held by something else",
			handler: http.NotFound,
			level:   doctor.Fail,
			has:     []string{"is in use by another program", "answered 404", "listen = ", "--listen"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			other := httptest.NewServer(tt.handler)
			defer other.Close()
			s := newSetup(t)
			s.listen = other.Listener.Addr().String()
			rep, _ := s.run(t)
			res, _ := get(rep, doctor.CheckListen)
			if res.Level != tt.level {
				t.Errorf("level %s, want %s: %s", res.Level, tt.level, res.Msg)
			}
			for _, h := range tt.has {
				if !strings.Contains(res.Msg, h) {
					t.Errorf("%q lacks %q", res.Msg, h)
				}
			}
			if !strings.Contains(res.Msg, s.listen) {
				t.Errorf("%q does not name the port %s", res.Msg, s.listen)
			}
		})
	}

	t.Run("held by a program that is not HTTP", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("220 not http\r\n"))
				_ = c.Close()
			}
		}()
		defer func() { _ = ln.Close(); <-done }()
		s := newSetup(t)
		s.listen = ln.Addr().String()
		rep, _ := s.run(t)
		res, _ := get(rep, doctor.CheckListen)
		if res.Level != doctor.Fail || !strings.Contains(res.Msg, "in use by another program") {
			t.Errorf("%s %s", res.Level, res.Msg)
		}
	})
}

// TestDoctorBudget: a resolver that never answers cannot keep the doctor
// past its budget.
func TestDoctorBudget(t *testing.T) {
	s := newSetup(t)
	s.system = hangingDNS()
	s.public = map[string]doctor.Resolver{"1.1.1.1:53": hangingDNS(), "8.8.8.8:53": hangingDNS()}
	s.budget = 300 * time.Millisecond
	start := time.Now()
	rep, _ := s.run(t)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("the run took %s with a budget of %s", took, s.budget)
	}
	res, _ := get(rep, doctor.CheckDNS)
	if res.Level != doctor.Fail || !strings.Contains(res.Msg, "timed out") {
		t.Errorf("dns: %s %s", res.Level, res.Msg)
	}
}
