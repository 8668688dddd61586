package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The tests of issue 13 ("no reply lost"), against the simulator: plain
// requests streamed upstream and assembled (stream_plain), first token and
// idle time-outs for plain requests, cuts that look like endings, and
// resumed streams.

const reply13 = "one two three four five six seven eight nine ten eleven twelve thirteen"

// simProxy serves a simulator with models and a proxy in front of it whose
// chain is chain[0] → chain[1:]; edit adjusts the config after that.
func simProxy(t *testing.T, models []simulator.ModelScenario, chain []string, edit func(*config.Config)) (*simulator.Simulator, *httptest.Server, *Server, *logBuffer) {
	t.Helper()
	sim, cfg := simConfig(t, models, chain, edit)
	ts, srv, logs := startProxy(t, cfg)
	return sim, ts, srv, logs
}

// simConfig serves a simulator with models and returns the config of a
// proxy in front of it.
func simConfig(t *testing.T, models []simulator.ModelScenario, chain []string, edit func(*config.Config)) (*simulator.Simulator, *config.Config) {
	t.Helper()
	sim := simulator.New(simulator.Scenario{AcceptAnyKey: true, Models: models})
	up := httptest.NewServer(sim)
	t.Cleanup(func() { up.Close(); sim.Close() })
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Upstream.StreamPlain = true
		c.Upstream.FirstByteTimeout = config.Duration(time.Second)
		c.Upstream.IdleTimeout = config.Duration(time.Second)
		c.Models = []config.Model{{ID: chain[0], Aliases: []string{"auto"}, Fallbacks: chain[1:]}}
		if edit != nil {
			edit(c)
		}
	})
	return sim, cfg
}

func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v (%s)", err, b)
	}
	return resp, b
}

// TestLongPlainReplyNotCut: a plain reply that takes 2.5 s to write, under a
// 1 s first_byte_timeout, is served whole by its own model with one
// upstream call, because the timeout runs to the first token, not to the
// end of the reply.
func TestLongPlainReplyNotCut(t *testing.T) {
	sim, ts, _, _ := simProxy(t, []simulator.ModelScenario{
		{ID: "slow/writer", Behavior: simulator.Behavior{Reply: reply13, TokensPerSecond: 13 / 2.5}},
		{ID: "good/fallback", Behavior: simulator.Behavior{Reply: "fallback"}},
	}, []string{"slow/writer", "good/fallback"}, nil)

	start := time.Now()
	resp, b := post(t, ts.URL, `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	took := time.Since(start)
	var got struct {
		Object  string `json:"object"`
		Choices []struct {
			Message      struct{ Content string } `json:"message"`
			FinishReason string                   `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if m := resp.Header.Get("X-Chutes-Proxy-Model"); m != "slow/writer" || resp.Header.Get("X-Chutes-Proxy-Attempts") != "1" {
		t.Fatalf("served by %q in %s attempts, want slow/writer in 1", m, resp.Header.Get("X-Chutes-Proxy-Attempts"))
	}
	if got.Object != "chat.completion" || len(got.Choices) != 1 || got.Choices[0].Message.Content != reply13 || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("reply %s", b)
	}
	if got.Usage == nil || got.Usage.CompletionTokens != 13 {
		t.Errorf("usage %s, want the usage event's 13 completion tokens", b)
	}
	if n, f := sim.Requests("slow/writer"), sim.Requests("good/fallback"); n != 1 || f != 0 {
		t.Errorf("upstream calls: slow/writer %d, fallback %d; want 1 and 0", n, f)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if took < 2*time.Second {
		t.Errorf("the reply came in %v: was it really paced?", took)
	}
	_, body := sim.LastRequest("slow/writer")
	if !strings.Contains(string(body), `"stream":true`) || !strings.Contains(string(body), `"include_usage":true`) {
		t.Errorf("the upstream was asked %s, want a stream with usage", body)
	}
}

// TestPlainStallFailsOver: a plain request whose miner stalls mid-reply goes
// on to the fallback after idle_timeout, invisibly, and the stalled model's
// breaker hears of it.
func TestPlainStallFailsOver(t *testing.T) {
	sim, ts, srv, _ := simProxy(t, []simulator.ModelScenario{
		{ID: "stall/one", Behavior: simulator.Behavior{Kind: simulator.KindStallAfter, StallAfter: 3, Reply: reply13}},
		{ID: "good/fallback", Behavior: simulator.Behavior{Reply: "served by the fallback"}},
	}, []string{"stall/one", "good/fallback"}, func(c *config.Config) {
		c.Upstream.IdleTimeout = config.Duration(500 * time.Millisecond)
	})
	start := time.Now()
	resp, b := post(t, ts.URL, `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	took := time.Since(start)
	if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Model") != "good/fallback" || resp.Header.Get("X-Chutes-Proxy-Attempts") != "2" {
		t.Fatalf("status %d via %q in %s attempts: %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model"), resp.Header.Get("X-Chutes-Proxy-Attempts"), b)
	}
	if !strings.Contains(string(b), `"served by the fallback"`) || strings.Contains(string(b), "one two") {
		t.Fatalf("reply %s: want the fallback's alone", b)
	}
	if took > 5*time.Second {
		t.Errorf("took %v: the stall was not left after idle_timeout (500ms)", took)
	}
	if c := srv.Router().Model("stall/one").Counts(); c.TotalFailures != 1 {
		t.Errorf("stall/one breaker counts %+v: want the stall counted as a failure", c)
	}
	if sim.Requests("stall/one") != 1 {
		t.Errorf("stall/one asked %d times", sim.Requests("stall/one"))
	}
}

// sseText reads a proxied stream: the content deltas joined, the comments,
// and the error event's code if it ended with one.
func sseText(t *testing.T, body []byte) (text string, comments []string, errCode string, done bool) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(nil, 1<<20)
	var b strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			comments = append(comments, line)
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: "):
			var ev struct {
				Choices []struct {
					Delta struct{ Content string } `json:"delta"`
				} `json:"choices"`
				Error *struct{ Code string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
				t.Fatalf("event %q does not parse: %v", line, err)
			}
			if ev.Error != nil {
				errCode = ev.Error.Code
			}
			for _, c := range ev.Choices {
				b.WriteString(c.Delta.Content)
			}
		}
	}
	return b.String(), comments, errCode, done
}

// TestStreamEndWithoutDone: a stream that the upstream ends cleanly in the
// middle of a reply, without data: [DONE], reaches the client as
// stream_interrupted, not as a whole reply, and counts against the model.
func TestStreamEndWithoutDone(t *testing.T) {
	_, ts, srv, logs := simProxy(t, []simulator.ModelScenario{
		{ID: "ends/early", Behavior: simulator.Behavior{Kind: simulator.KindEndAfter, EndAfter: 4, Reply: reply13}},
	}, []string{"ends/early"}, nil)
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body) // the connection is aborted after the error event
	resp.Body.Close()
	text, _, code, done := sseText(t, b)
	if code != "stream_interrupted" || done {
		t.Fatalf("stream %q: error code %q, [DONE] %v; want stream_interrupted and no [DONE]", b, code, done)
	}
	if text != "one two three" {
		t.Errorf("text before the cut %q", text)
	}
	if !strings.Contains(logs.String(), "without data: [DONE]") {
		t.Errorf("the log does not say why: %s", logs.String())
	}
	if c := srv.Router().Model("ends/early").Counts(); c.ConsecutiveFailures != 1 {
		t.Errorf("breaker counts %+v: the cut must count as a failure", c)
	}
}

// resumeModels: a model whose streams are cut after a few events, and a
// healthy fallback with the same canned reply.
func resumeModels(cutAfter int) []simulator.ModelScenario {
	return []simulator.ModelScenario{
		{ID: "cut/one", Behavior: simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: cutAfter, Reply: reply13}},
		{ID: "good/two", Behavior: simulator.Behavior{Reply: reply13}},
	}
}

// TestResumedStream: with resume_streams, a stream cut after its first
// token is continued (the same model first, then the chain) and the client
// reads one whole reply: the text so far kept, no text repeated, one
// comment per resume, the continuation asked with the text so far as the
// final assistant message, and every resume counted.
func TestResumedStream(t *testing.T) {
	var mu sync.Mutex
	var resumes [][2]string
	sim, cfg := simConfig(t, resumeModels(4), []string{"cut/one", "good/two"}, func(c *config.Config) {
		c.Failover.ResumeStreams = true
		c.Failover.MaxAttempts = 3
	})
	srv := New(Options{Config: cfg, Resumed: func(from, to string) {
		mu.Lock()
		resumes = append(resumes, [2]string{from, to})
		mu.Unlock()
	}})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()

	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"count"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the stream broke: %v: %s", err, b)
	}
	text, comments, code, done := sseText(t, b)
	if text != reply13 || !done || code != "" {
		t.Fatalf("client read %q (done %v, error %q); want the whole reply once\n%s", text, done, code, b)
	}
	mu.Lock()
	n := len(resumes)
	mu.Unlock()
	if n == 0 || len(comments) != n {
		t.Fatalf("%d resumes counted, comments %q: want one comment per resume", n, comments)
	}
	for _, c := range comments {
		if !strings.HasPrefix(c, ": resumed on ") {
			t.Errorf("comment %q", c)
		}
	}
	// One id for the whole reply.
	ids := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		var ev struct{ ID string }
		if strings.HasPrefix(l, "data: {") && json.Unmarshal([]byte(l[6:]), &ev) == nil {
			ids[ev.ID] = true
		}
	}
	if len(ids) != 1 {
		t.Errorf("events carry ids %v, want the first stream's only", ids)
	}
	// The continuation request: the original messages, the text so far as
	// the final assistant message, and the two flags.
	_, body := sim.LastRequest("good/two")
	if body == nil {
		_, body = sim.LastRequest("cut/one")
	}
	var req struct {
		Messages  []struct{ Role, Content string }
		Continue  *bool `json:"continue_final_message"`
		GenPrompt *bool `json:"add_generation_prompt"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	last := req.Messages[len(req.Messages)-1]
	if len(req.Messages) != 2 || req.Messages[0].Content != "count" || last.Role != "assistant" || !strings.HasPrefix(reply13, last.Content) || last.Content == "" {
		t.Errorf("continuation messages %+v", req.Messages)
	}
	if req.Continue == nil || !*req.Continue || req.GenPrompt == nil || *req.GenPrompt {
		t.Errorf("continuation flags %s", body)
	}
}

// TestNotResumed: a stream cut inside its reasoning (no content yet) or
// inside a tool call is not resumed, resume_streams or not: it ends with
// stream_interrupted as before.
func TestNotResumed(t *testing.T) {
	tests := []struct {
		name string
		b    simulator.Behavior
		body string
	}{
		{"inside reasoning", simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 3, Reasoning: "let me think about this for a while", Reply: reply13},
			`{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"inside a tool call", simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 3, ToolCalls: 1},
			`{"model":"auto","stream":true,"messages":[{"role":"user","content":"weather?"}],"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, ts, _, _ := simProxy(t, []simulator.ModelScenario{{ID: "cut/one", Behavior: tt.b}, {ID: "good/two"}},
				[]string{"cut/one", "good/two"}, func(c *config.Config) { c.Failover.ResumeStreams = true })
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_, comments, code, _ := sseText(t, b)
			if code != "stream_interrupted" || len(comments) != 0 {
				t.Fatalf("error %q, comments %q: want stream_interrupted and no resume\n%s", code, comments, b)
			}
			if sim.Requests("cut/one") != 1 || sim.Requests("good/two") != 0 {
				t.Errorf("calls cut %d, good %d: nothing must be asked again", sim.Requests("cut/one"), sim.Requests("good/two"))
			}
		})
	}
}

// TestAssembledReplyFidelity: through the proxy, a plain request answered
// from a stream equals the simulator's own plain answer field by field (id
// and created aside), for text, reasoning, tool calls and two choices; the
// official openai-go client reads it.
func TestAssembledReplyFidelity(t *testing.T) {
	models := []simulator.ModelScenario{
		{ID: "text/m", Behavior: simulator.Behavior{Reply: reply13}},
		{ID: "think/m", Behavior: simulator.Behavior{Reply: reply13, Reasoning: "first I think"}},
		{ID: "tools/m", Behavior: simulator.Behavior{ToolCalls: 2}},
	}
	sim, ts, _, _ := simProxy(t, models, []string{"text/m"}, nil)
	direct := httptest.NewServer(sim)
	defer direct.Close()
	tools := `,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]`
	tests := []struct{ name, body string }{
		{"text", `{"model":"text/m","messages":[{"role":"user","content":"hi"}]}`},
		{"reasoning", `{"model":"think/m","messages":[{"role":"user","content":"hi"}]}`},
		{"tool calls", `{"model":"tools/m","messages":[{"role":"user","content":"weather?"}]` + tools + `}`},
		{"two choices", `{"model":"text/m","n":2,"messages":[{"role":"user","content":"hi"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, viaProxy := post(t, ts.URL, tt.body)
			_, plain := post(t, direct.URL, tt.body)
			var a, b map[string]any
			if err := json.Unmarshal(viaProxy, &a); err != nil {
				t.Fatalf("proxy: %v: %s", err, viaProxy)
			}
			if err := json.Unmarshal(plain, &b); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"id", "created"} {
				delete(a, k)
				delete(b, k)
			}
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("assembled\n%s\nplain\n%s", viaProxy, plain)
			}
		})
	}

	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "tools/m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather?")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "get_weather", Parameters: openai.FunctionParameters{"type": "object"}})},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 || len(resp.Choices[0].Message.ToolCalls) != 2 || resp.Choices[0].Message.ToolCalls[0].Function.Name != "get_weather" {
		t.Fatalf("openai-go read %+v", resp.Choices)
	}
}

// p95s is a failover.Observer that says every model has a long history
// with a p95 time to first token of p95.
type p95s struct{ p95 time.Duration }

func (p95s) Attempted(string, failover.Attempt, time.Duration) {}
func (p p95s) FirstTokenP95(string) (time.Duration, int)       { return p.p95, 100 }

// TestLearnedCutOff: a model whose replies usually start within 50 ms, now
// hung before its first token, is left at its learned cut-off
// (max(cutoff_floor, 3 × p95) = 300 ms), not at first_byte_timeout (10 s),
// while a slow model still within its cut-off is not cut.
func TestLearnedCutOff(t *testing.T) {
	sim, cfg := simConfig(t, []simulator.ModelScenario{
		{ID: "hung/one", Behavior: simulator.Behavior{Kind: simulator.KindHang}},
		{ID: "slow/two", Behavior: simulator.Behavior{TTFT: 150 * time.Millisecond, Reply: "slow but healthy"}},
	}, []string{"hung/one", "slow/two"}, func(c *config.Config) {
		c.Upstream.FirstByteTimeout = config.Duration(10 * time.Second)
		c.Failover.LearnedCutoff = true
		c.Failover.CutoffFactor = 3
		c.Failover.CutoffFloor = config.Duration(300 * time.Millisecond)
	})
	srv := New(Options{Config: cfg, Router: failover.New(cfg, nil, p95s{p95: 50 * time.Millisecond})})
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()
	start := time.Now()
	resp, b := post(t, ts.URL, `{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	took := time.Since(start)
	if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Model") != "slow/two" {
		t.Fatalf("status %d via %q: %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model"), b)
	}
	if took > 3*time.Second {
		t.Errorf("took %v: the hung model was not left at its learned cut-off (300ms)", took)
	}
	if c := srv.Router().Model("hung/one").Counts(); c.TotalFailures != 1 {
		t.Errorf("the cut counted %d failures, want 1", c.TotalFailures)
	}
	if sim.Requests("slow/two") != 1 {
		t.Errorf("slow/two asked %d times", sim.Requests("slow/two"))
	}
}
