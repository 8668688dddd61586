package failover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

func testConfig(t testing.TB, models ...config.Model) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Models = models
	return cfg
}

func chain(id string, aliases []string, fallbacks ...string) config.Model {
	return config.Model{ID: id, Aliases: aliases, Fallbacks: fallbacks}
}

// script answers each model with a fixed error (nil = serve) and counts calls.
type script struct {
	mu    sync.Mutex
	errs  map[string]error
	calls map[string]int
	order []string
}

func newScript(errs map[string]error) *script {
	return &script{errs: errs, calls: map[string]int{}}
}

func (s *script) try(ctx context.Context, model string) error {
	s.mu.Lock()
	s.calls[model]++
	s.order = append(s.order, model)
	err := s.errs[model]
	s.mu.Unlock()
	return err
}

func (s *script) count(model string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[model]
}

func up(status int) error { return &UpstreamError{Status: status, Body: []byte(`{"detail":"x"}`)} }

func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		action  Action
		failure bool
	}{
		{"404", up(404), Next, true},
		{"429", up(429), Next, true},
		{"500", up(500), Next, true},
		{"502", up(502), Next, true},
		{"503", up(503), Next, true},
		{"504", up(504), Next, true},
		{"520 cloudflare", up(520), Next, true},
		{"400", up(400), Return, false},
		{"401", up(401), SkipProvider, false},
		{"402", up(402), SkipProvider, false},
		{"403", up(403), SkipProvider, false},
		{"413", up(413), Return, false},
		{"422", up(422), Return, false},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, Next, true},
		{"first byte timeout", &TimeoutError{After: time.Second}, Next, true},
		{"error event first", &StreamError{Reason: "boom"}, Next, true},
		{"html", &NotAPIError{Status: 200}, Next, true},
		{"client canceled", fmt.Errorf("wrapped: %w", context.Canceled), Stop, false},
		{"tls", errors.New("tls: failed to verify certificate"), Next, true},
		{"dns", &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "llm.chutes.ai", IsNotFound: true}}, Next, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, f := Classify(tt.err)
			if a != tt.action || f != tt.failure {
				t.Fatalf("Classify = %v, %v; want %v, %v", a, f, tt.action, tt.failure)
			}
		})
	}
}

func TestChainOrderAndAliases(t *testing.T) {
	cfg := testConfig(t,
		chain("a/one", []string{"auto"}, "b/two", "c-alias"),
		chain("c/three", []string{"c-alias"}),
	)
	r := New(cfg, nil, nil)
	if got := fmt.Sprint(r.Resolve("auto")); got != "[a/one b/two c/three]" {
		t.Fatalf("chain %s", got)
	}
	if got := fmt.Sprint(r.Resolve("A/ONE")); got != "[a/one b/two c/three]" {
		t.Fatalf("case-insensitive chain %s", got)
	}
	if got := fmt.Sprint(r.Resolve("x/unknown")); got != "[x/unknown]" {
		t.Fatalf("unconfigured model chain %s", got)
	}
	s := newScript(map[string]error{"a/one": up(503), "b/two": up(429)})
	res, err := r.Do(context.Background(), Request{Model: "auto"}, s.try)
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "c/three" || res.UpstreamAttempts() != 3 || fmt.Sprint(s.order) != "[a/one b/two c/three]" {
		t.Fatalf("served %s after %d attempts, order %v", res.Model, res.UpstreamAttempts(), s.order)
	}
	if res.Attempts[0].Status != 503 || res.Attempts[1].Status != 429 || res.Attempts[2].Kind != KindServed {
		t.Fatalf("attempts %+v", res.Attempts)
	}
}

func TestReturnsAtOnce(t *testing.T) {
	for _, status := range []int{400, 401, 402, 403, 413, 422} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			r := New(testConfig(t, chain("a/one", nil, "b/two")), nil, nil)
			s := newScript(map[string]error{"a/one": up(status)})
			res, err := r.Do(context.Background(), Request{Model: "a/one"}, s.try)
			var ue *UpstreamError
			if !errors.As(err, &ue) || ue.Status != status {
				t.Fatalf("err %v", err)
			}
			if s.count("b/two") != 0 || res.UpstreamAttempts() != 1 {
				t.Fatalf("fell over on %d", status)
			}
			if r.Model("a/one").Counts().TotalFailures != 0 {
				t.Fatalf("%d counted as a breaker failure", status)
			}
		})
	}
}

func TestMaxAttempts(t *testing.T) {
	cfg := testConfig(t, chain("m/1", nil, "m/2", "m/3", "m/4"))
	cfg.Failover.MaxAttempts = 2
	r := New(cfg, nil, nil)
	s := newScript(map[string]error{"m/1": up(503), "m/2": up(503), "m/3": up(503)})
	res, err := r.Do(context.Background(), Request{Model: "m/1"}, s.try)
	if !errors.Is(err, ErrExhausted) || res.UpstreamAttempts() != 2 || s.count("m/3") != 0 {
		t.Fatalf("err %v attempts %d calls %v", err, res.UpstreamAttempts(), s.calls)
	}
}

func TestBreakerOpensSkipsAndHalfOpens(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(t, chain("dead/one", nil, "live/two"))
		cfg.Breaker.Failures = 3
		cfg.Breaker.Cooldown = config.Duration(30 * time.Second)
		r := New(cfg, nil, nil)
		s := newScript(map[string]error{"dead/one": up(503)})
		for i := 0; i < 3; i++ {
			if res, err := r.Do(context.Background(), Request{Model: "dead/one"}, s.try); err != nil || res.Model != "live/two" {
				t.Fatalf("request %d: %v %s", i, err, res.Model)
			}
		}
		if st := r.Model("dead/one").State(); st != gobreaker.StateOpen {
			t.Fatalf("breaker %v after 3 failures", st)
		}
		// Open: skipped with no upstream call.
		res, err := r.Do(context.Background(), Request{Model: "dead/one"}, s.try)
		if err != nil || s.count("dead/one") != 3 || res.Attempts[0].Kind != KindBreakerOpen || res.UpstreamAttempts() != 1 {
			t.Fatalf("open breaker not skipped: calls %d attempts %+v", s.count("dead/one"), res.Attempts)
		}
		// After the cooldown one trial goes through; its success closes it.
		time.Sleep(31 * time.Second)
		if st := r.Model("dead/one").State(); st != gobreaker.StateHalfOpen {
			t.Fatalf("breaker %v after cooldown", st)
		}
		s.mu.Lock()
		s.errs["dead/one"] = nil
		s.mu.Unlock()
		res, err = r.Do(context.Background(), Request{Model: "dead/one"}, s.try)
		if err != nil || res.Model != "dead/one" || s.count("dead/one") != 4 {
			t.Fatalf("trial request: %v %s", err, res.Model)
		}
		if st := r.Model("dead/one").State(); st != gobreaker.StateClosed {
			t.Fatalf("breaker %v after a good trial", st)
		}
	})
}

func TestClientCancelNotCounted(t *testing.T) {
	cfg := testConfig(t, chain("m/1", nil, "m/2"))
	cfg.Breaker.Failures = 1
	r := New(cfg, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	try := func(ctx context.Context, model string) error {
		cancel()
		return fmt.Errorf("read: %w", context.Canceled)
	}
	_, err := r.Do(ctx, Request{Model: "m/1"}, try)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if c := r.Model("m/1").Counts(); c.TotalFailures != 0 || r.Model("m/1").State() != gobreaker.StateClosed {
		t.Fatalf("cancel counted: %+v", c)
	}
}

func TestLimiterPacesAndSkips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig(t, chain("slow/one", nil, "other/two"))
		cfg.RateLimit.RequestsPerMinute = 60 // one a second
		cfg.RateLimit.Burst = 1
		cfg.RateLimit.MaxWait = config.Duration(1500 * time.Millisecond)
		r := New(cfg, nil, nil)
		s := newScript(nil)
		start := time.Now()
		// 1st: token at once; 2nd: waits 1 s; 3rd: would wait 2 s > max_wait → skipped.
		var wg sync.WaitGroup
		results := make([]Result, 3)
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], _ = r.Do(context.Background(), Request{Model: "slow/one"}, s.try)
			}()
			synctest.Wait()
		}
		wg.Wait()
		served := map[string]int{}
		for _, res := range results {
			served[res.Model]++
		}
		if served["slow/one"] != 2 || served["other/two"] != 1 {
			t.Fatalf("served %v", served)
		}
		if el := time.Since(start); el != time.Second {
			t.Fatalf("paced for %v, want 1s", el)
		}
		var skipped bool
		for _, res := range results {
			if len(res.Attempts) == 2 && res.Attempts[0].Kind == KindLocalLimit {
				skipped = true
			}
		}
		if !skipped {
			t.Fatalf("no local-limit skip recorded: %+v", results)
		}
	})
}

func TestCoolingAfter429(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New(testConfig(t, chain("busy/one", nil, "free/two")), nil, nil)
		s := newScript(map[string]error{"busy/one": &UpstreamError{Status: 429, RetryAfter: 10 * time.Second}})
		r.Do(context.Background(), Request{Model: "busy/one"}, s.try)
		res, _ := r.Do(context.Background(), Request{Model: "busy/one"}, s.try)
		if s.count("busy/one") != 1 || res.Attempts[0].Kind != KindCooling {
			t.Fatalf("not cooled: calls %d, %+v", s.count("busy/one"), res.Attempts)
		}
		time.Sleep(11 * time.Second)
		r.Do(context.Background(), Request{Model: "busy/one"}, s.try)
		if s.count("busy/one") != 2 {
			t.Fatal("still cooling after Retry-After")
		}
		// Without Retry-After the model still rests briefly (backoff).
		r2 := New(testConfig(t), nil, nil)
		s2 := newScript(map[string]error{"x/y": up(429)})
		r2.Do(context.Background(), Request{Model: "x/y"}, s2.try)
		if until := r2.Model("x/y").CoolingUntil(time.Now()); until.IsZero() {
			t.Fatal("429 without Retry-After did not cool the model")
		}
	})
}

func TestContextWindowSkip(t *testing.T) {
	r := New(testConfig(t, chain("big/one", nil, "small/two", "big/three")), nil, nil)
	r.SetContextLengths(func(id string) int {
		if id == "small/two" {
			return 32000
		}
		return 0 // unknown: try it
	})
	s := newScript(map[string]error{"big/one": up(503)})
	res, err := r.Do(context.Background(), Request{Model: "big/one", PromptTokens: 41000}, s.try)
	if err != nil || res.Model != "big/three" || s.count("small/two") != 0 {
		t.Fatalf("%v %s %v", err, res.Model, s.calls)
	}
	if a := res.Attempts[1]; a.Kind != KindContext || a.Reason != "context 32k < ~41k tokens" {
		t.Fatalf("skip %+v", a)
	}
}

func TestReloadKeepsState(t *testing.T) {
	cfg := testConfig(t, chain("dead/one", nil, "b/two"))
	cfg.Breaker.Failures = 1
	r := New(cfg, nil, nil)
	s := newScript(map[string]error{"dead/one": up(503)})
	r.Do(context.Background(), Request{Model: "dead/one"}, s.try)
	if r.Model("dead/one").State() != gobreaker.StateOpen {
		t.Fatal("breaker not open")
	}
	cfg2 := testConfig(t, chain("dead/one", []string{"auto"}, "c/three"))
	cfg2.Breaker.Failures = 1
	cfg2.RateLimit.RequestsPerMinute = 120
	cfg2.RateLimit.Burst = 4
	r.Update(cfg2)
	if r.Model("dead/one").State() != gobreaker.StateOpen {
		t.Fatal("reload reset an open breaker")
	}
	if l := r.Model("dead/one").Limits(); l.RequestsPerMinute != 120 || l.Burst != 4 {
		t.Fatalf("limits not applied: %+v", l)
	}
	res, err := r.Do(context.Background(), Request{Model: "auto"}, s.try)
	if err != nil || res.Model != "c/three" {
		t.Fatalf("new chain not used: %v %s", err, res.Model)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"5", 5 * time.Second}, {"0", 0}, {"-3", 0}, {"soon", 0}, {"1.5", 1500 * time.Millisecond},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"99999999", 0},
	}
	for _, tt := range tests {
		if got := ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestReasonFromBody(t *testing.T) {
	tests := []struct{ body, want string }{
		{`{"detail":"No instances available (yet) for chute_id='abc'"}`, "No instances available (yet) for chute_id='abc'"},
		{`{"detail":{"message":"model is under maintenance"}}`, "model is under maintenance"},
		{`{"detail":[{"loc":["body","model"],"msg":"field required"}]}`, "field required"},
		{`{"error":{"message":"bad","type":"x"}}`, "bad"},
		{`{"error":"Unhandled exception during response stream: boom"}`, "Unhandled exception during response stream: boom"},
		{`<html>`, ""},
		{`{}`, ""},
	}
	for _, tt := range tests {
		if got := ReasonFromBody([]byte(tt.body)); got != tt.want {
			t.Errorf("ReasonFromBody(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func TestConcurrentFlappingChain(t *testing.T) {
	cfg := testConfig(t, chain("flap/one", nil, "flap/two", "ok/three"))
	cfg.Breaker.Cooldown = config.Duration(10 * time.Millisecond)
	r := New(cfg, nil, nil)
	var n atomic.Int64
	try := func(ctx context.Context, model string) error {
		if model != "ok/three" && n.Add(1)%3 != 0 {
			return up(503)
		}
		return nil
	}
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, err := r.Do(context.Background(), Request{Model: "flap/one"}, try); err == nil && res.Model != "" {
				served.Add(1)
			}
		}()
	}
	wg.Wait()
	if served.Load() != 1000 {
		t.Fatalf("served %d of 1000", served.Load())
	}
}

// TestFirstTokenLatency: a try that marks its first token and returns
// later is observed with its time to that token, not its whole duration.
func TestFirstTokenLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		obs := &latencies{}
		r := New(testConfig(t), nil, obs)
		_, err := r.Do(context.Background(), Request{Model: "m/one"}, func(ctx context.Context, model string) error {
			time.Sleep(2 * time.Second) // waiting for the first token
			FirstToken(ctx)
			time.Sleep(30 * time.Second) // the rest of the reply
			FirstToken(ctx)              // only the first mark counts
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := obs.get("m/one"); got != 2*time.Second {
			t.Fatalf("observed latency %v, want the 2s to the first token", got)
		}
	})
}

type latencies struct {
	mu sync.Mutex
	m  map[string]time.Duration
}

func (l *latencies) Attempted(model string, _ Attempt, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]time.Duration{}
	}
	l.m[model] = d
}

func (l *latencies) get(model string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[model]
}

// TestProviderRefusalSkipsItsModels: a 401/402/403 skips the rest of that
// provider's models (the same key would be refused) and the walk goes on
// with other providers; when nothing serves, the refusal is the answer.
func TestProviderRefusalSkipsItsModels(t *testing.T) {
	cfg := testConfig(t, chain("a/one", []string{"auto"}, "a/two", "local:llama", "a/three"))
	cfg.Providers = []config.Provider{{Name: "local", BaseURL: "http://127.0.0.1:1/v1"}}
	cfg.Failover.MaxAttempts = 5

	s := newScript(map[string]error{"a/one": up(402)})
	r := New(cfg, nil, nil)
	res, err := r.Do(context.Background(), Request{Model: "auto"}, s.try)
	if err != nil || res.Model != "local:llama" {
		t.Fatalf("Do = %v, served by %q; want local:llama", err, res.Model)
	}
	if s.count("a/two") != 0 || s.count("a/three") != 0 {
		t.Errorf("Chutes was asked again after its 402: %v", s.order)
	}
	if k := res.Attempts[1].Kind; k != KindProviderRefused || res.Attempts[1].Model != "a/two" {
		t.Errorf("attempt 2 %+v, want a/two skipped as provider_refused", res.Attempts[1])
	}

	// The other provider refuses its key while Chutes is down: the key
	// diagnosis outranks "unavailable".
	s = newScript(map[string]error{"a/one": up(503), "a/two": up(503), "local:llama": up(401), "a/three": up(503)})
	r = New(cfg, nil, nil)
	res, err = r.Do(context.Background(), Request{Model: "auto"}, s.try)
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Status != 401 {
		t.Fatalf("Do = %v, want the 401", err)
	}
	if s.count("a/three") != 1 || res.UpstreamAttempts() != 4 {
		t.Errorf("calls %v: Chutes' last model must still be tried after local's 401", s.order)
	}
	if c := r.Model("local:llama").Counts(); c.TotalFailures != 0 {
		t.Errorf("a refused key counted against the breaker: %+v", c)
	}
}
