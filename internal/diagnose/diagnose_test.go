package diagnose

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

func TestURLHint(t *testing.T) {
	tests := []struct{ base, want string }{
		{"https://llm.chutes.ai/v1", ""},
		{"https://api.chutes.ai/v1", "account API"},
		{"https://api.chutesai.com/v1", "not Chutes' domain"},
		{"https://chutes-deepseek-ai-deepseek-r1.chutes.ai/v1", "one chute's own address"},
		{"https://llm.chutes.ai/v1/chat/completions", "ends in /chat/completions"},
		{"llm.chutes.ai", "not a URL"},
		{"http://127.0.0.1:9999/v1", ""},
	}
	for _, tt := range tests {
		got := URLHint(tt.base)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("URLHint(%q) = %q, want it to mention %q", tt.base, got, tt.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3-0324", "Qwen/Qwen2.5-72B-Instruct", "chutesai/Mistral-Small-3.1-24B-Instruct-2503"}
	tests := []struct{ in, want string }{
		{"deepseek-ai/deepseek-r1", "deepseek-ai/DeepSeek-R1"},
		{"DeepSeek-R1", "deepseek-ai/DeepSeek-R1"},
		{"deepseek-ai/DeepSeek-R2", "deepseek-ai/DeepSeek-R1"},
		{"qwen2.5-72b-instruct", "Qwen/Qwen2.5-72B-Instruct"},
		{"gpt-4o", ""},
	}
	for _, tt := range tests {
		got := Suggest(tt.in, known, 1)
		if tt.want == "" && len(got) != 0 || tt.want != "" && (len(got) == 0 || got[0] != tt.want) {
			t.Errorf("Suggest(%q) = %v, want %q", tt.in, got, tt.want)
		}
	}
}

func up(status int, body string, retry time.Duration) *failover.UpstreamError {
	return &failover.UpstreamError{Status: status, Body: []byte(body), RetryAfter: retry}
}

// TestMessages checks every contract error's status, code and the facts
// its message must tell; run with -v to read them all.
func TestMessages(t *testing.T) {
	env := Env{BaseURL: "https://llm.chutes.ai/v1", KeyPrefix: "cpk_ab…",
		Known: func() []string { return []string{"deepseek-ai/DeepSeek-R1"} }}
	at := func(model string, status int, reason string, kind string, retry time.Duration) failover.Attempt {
		return failover.Attempt{Model: model, Status: status, Reason: reason, Kind: kind, RetryAfter: retry,
			Err: up(status, `{"detail":"`+reason+`"}`, retry)}
	}
	tests := []struct {
		name   string
		err    *Error
		status int
		code   string
		must   []string
	}{
		{"missing key", MissingKey(false), 401, CodeMissingKey, []string{"cpk_", "CHUTES_API_KEY", "proxy.toml", "API key field"}},
		{"invalid key", Explain(failover.Result{}, up(401, `{"detail":"Invalid token or user not found"}`, 0), env), 401, CodeInvalidKey,
			[]string{"rejected", "cpk_ab…", "start with cpk_", "spaces", "regenerate"}},
		{"invalid key, not cpk_", Explain(failover.Result{}, up(401, `{"detail":"x"}`, 0), Env{KeyPrefix: "sk-pro…", KeyLooksWrong: true, KeyNotes: []string{"upstream.api_key had white space around it; trimmed"}}), 401, CodeInvalidKey,
			[]string{"does not start with cpk_", "white space"}},
		{"payment", Explain(failover.Result{}, up(402, `{"detail":"Quota exceeded and account balance is $0.0"}`, 0), env), 402, CodePaymentRequired,
			[]string{"balance", "300 requests a day", "dashboard"}},
		{"all 429", Explain(failover.Result{Requested: "a", Attempts: []failover.Attempt{
			at("a/one", 429, "Infrastructure is at maximum capacity, try again later", failover.KindFailed, 3*time.Second),
			at("b/two", 0, "overloaded (429), resting", failover.KindCooling, 2*time.Second)}}, failover.ErrExhausted, env),
			429, CodeRateLimited, []string{"a/one", "retry in 2s"}},
		{"local limit", Explain(failover.Result{Attempts: []failover.Attempt{
			{Model: "a/one", Kind: failover.KindLocalLimit, Reason: "local rate limit of 10 requests/minute: next slot in 4s", RetryAfter: 4 * time.Second}}}, failover.ErrExhausted, env),
			429, CodeLocalRateLimit, []string{"own rate limit", "4s", "requests_per_minute"}},
		{"all unavailable", Explain(failover.Result{Attempts: []failover.Attempt{
			at("deepseek-ai/DeepSeek-R1", 503, "No instances available (yet) for chute_id='x'", failover.KindFailed, 0),
			{Model: "b/two", Kind: failover.KindFailed, Reason: "timed out after 1s waiting for the first token", Err: &failover.TimeoutError{After: time.Second}},
			{Model: "c/three", Kind: failover.KindBreakerOpen, Reason: "circuit open until 14:02:10 after repeated failures"}}}, failover.ErrExhausted, env),
			503, CodeAllUnavailable, []string{"No instances available", "timed out after 1s", "circuit open until 14:02:10", "retry", "fallbacks"}},
		{"model not found", Explain(failover.Result{Requested: "deepseek-ai/deepseek-r1", Attempts: []failover.Attempt{
			at("deepseek-ai/deepseek-r1", 404, "model not found: deepseek-ai/deepseek-r1", failover.KindFailed, 0)}}, failover.ErrExhausted, env),
			404, CodeModelNotFound, []string{"Did you mean deepseek-ai/DeepSeek-R1?"}},
		{"404 of a listed model is a down chute", Explain(failover.Result{Requested: "deepseek-ai/DeepSeek-R1", Attempts: []failover.Attempt{
			at("deepseek-ai/DeepSeek-R1", 404, "No matching chute found!", failover.KindFailed, 0)}}, failover.ErrExhausted, env),
			503, CodeAllUnavailable, []string{"DeepSeek-R1: No matching chute found. "}},
		{"wrong url", Explain(failover.Result{Attempts: []failover.Attempt{
			{Model: "a/one", Kind: failover.KindFailed, Reason: "an HTML page", Err: &failover.NotAPIError{Status: 200, ContentType: "text/html"}}}}, failover.ErrExhausted,
			Env{BaseURL: "https://api.chutes.ai/v1"}), 502, CodeUpstreamNotAPI, []string{"account API", CurrentBaseURL}},
		{"network, not the models", Explain(failover.Result{Attempts: []failover.Attempt{
			{Model: "a/one", Kind: failover.KindFailed, Reason: "DNS: host llm.chutes.ai not found", Err: &net.DNSError{Name: "llm.chutes.ai", IsNotFound: true}},
			{Model: "b/two", Kind: failover.KindFailed, Reason: "DNS: host llm.chutes.ai not found", Err: &net.DNSError{Name: "llm.chutes.ai", IsNotFound: true}}}}, failover.ErrExhausted, env),
			503, CodeAllUnavailable, []string{"could not reach llm.chutes.ai", "not Chutes' models", "VPN", "resolver", "doctor"}},
		{"invalid json", BodyError(fmt.Errorf("x: %w", &payload.SyntaxError{Offset: 3, Msg: "expected ':'"}), 32), 400, CodeInvalidJSON, []string{"not valid JSON", "byte 3"}},
		{"missing model", BodyError(payload.ErrNoModel, 32), 400, CodeMissingModel, []string{`"model"`}},
		{"too large", BodyError(ErrBodyTooLarge, 32), 413, CodeBodyTooLarge, []string{"32 MB", "max_body_mb"}},
		{"proxy key", InvalidProxyKey(), 401, CodeInvalidProxyKey, []string{"proxy", "not Chutes", "proxy_key"}},
		{"host", HostNotAllowed("evil.example"), 403, CodeHostNotAllowed, []string{"evil.example", "allowed_hosts"}},
		{"stream interrupted", StreamInterrupted("a/one", "no data for 60s"), 502, CodeStreamInterrupted, []string{"a/one", "cut off", "no data for 60s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.err
			if e.Status != tt.status || e.Code != tt.code || e.Type == "" {
				t.Fatalf("%d %s %s, want %d %s", e.Status, e.Code, e.Type, tt.status, tt.code)
			}
			for _, m := range tt.must {
				if !strings.Contains(e.Message, m) {
					t.Errorf("message lacks %q: %s", m, e.Message)
				}
			}
			t.Logf("%d %s: %s", e.Status, e.Code, e.Message)
		})
	}
}

func TestRetryAfterHeader(t *testing.T) {
	e := &Error{RetryAfter: 1500 * time.Millisecond}
	if e.RetryAfterHeader() != "2" {
		t.Fatal(e.RetryAfterHeader())
	}
	if (&Error{}).RetryAfterHeader() != "" {
		t.Fatal("zero Retry-After set a header")
	}
}
