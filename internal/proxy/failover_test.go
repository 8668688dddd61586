package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// fakeChutes answers per model with a behaviour; it records what it saw.
type fakeChutes struct {
	mu     sync.Mutex
	act    map[string]func(w http.ResponseWriter, r *http.Request)
	calls  map[string]int
	bodies map[string][]byte
	models []string
}

func newFake(t *testing.T) (*fakeChutes, *httptest.Server) {
	f := &fakeChutes{act: map[string]func(http.ResponseWriter, *http.Request){}, calls: map[string]int{}, bodies: map[string][]byte{}}
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	return f, ts
}

func (f *fakeChutes) set(model string, h func(w http.ResponseWriter, r *http.Request)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.act[model] = h
}

func (f *fakeChutes) count(model string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[model]
}

func (f *fakeChutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/models") {
		f.mu.Lock()
		var data []map[string]any
		for _, m := range f.models {
			data = append(data, map[string]any{"id": m, "object": "model", "context_length": 65536})
		}
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	json.Unmarshal(b, &req)
	f.mu.Lock()
	f.calls[req.Model]++
	f.bodies[req.Model] = b
	h := f.act[req.Model]
	f.mu.Unlock()
	if h == nil {
		w.WriteHeader(404)
		fmt.Fprintf(w, `{"detail":"model not found: %s"}`, req.Model)
		return
	}
	h(w, r)
}

func status(code int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func okJSON(model string) func(http.ResponseWriter, *http.Request) {
	return status(200, `{"id":"x","object":"chat.completion","model":"`+model+`","choices":[{"index":0,"message":{"role":"assistant","content":"hello from `+model+`"},"finish_reason":"stop"}]}`)
}

func okSSE(model string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range []string{"hello ", "from ", model} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", model, c)
			http.NewResponseController(w).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
}

// ok serves JSON or SSE as the request asks.
func ok(model string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "text/event-stream" || strings.Contains(r.URL.RawQuery, "stream") {
			okSSE(model)(w, r)
			return
		}
		okJSON(model)(w, r)
	}
}

func hangAfterHeaders(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

func hangBeforeHeaders(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

func errorFirstEvent(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, `{"error":"Unhandled exception during response stream: CUDA out of memory"}`+"\n")
}

func dataErrorFirst(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, "data: {\"error\":{\"message\":\"engine dead\"}}\n\n")
}

func htmlPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html")
	io.WriteString(w, "<!doctype html><html><body>Welcome</body></html>")
}

type chatResult struct {
	status   int
	header   http.Header
	body     string
	code     string
	message  string
	attempts []map[string]any
}

func chat(t *testing.T, url, model string, stream bool) chatResult {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}],"stream":%v}`, model, stream)
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if stream {
		req.Header.Set("Accept", "text/event-stream")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	res := chatResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
	var e struct {
		Error struct {
			Code     string           `json:"code"`
			Message  string           `json:"message"`
			Attempts []map[string]any `json:"attempts"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil {
		res.code, res.message, res.attempts = e.Error.Code, e.Error.Message, e.Error.Attempts
	}
	return res
}

// TestFailoverTriggers runs every failover trigger and non-trigger, plain
// and streaming, through a two-model chain.
func TestFailoverTriggers(t *testing.T) {
	refused := func() string { // a loopback port nobody listens on
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}()
	_ = refused
	tests := []struct {
		name       string
		first      func(http.ResponseWriter, *http.Request)
		wantModel  string // "" = error
		wantStatus int
		wantCode   string
	}{
		{"503 no instances", status(503, `{"detail":"No instances available (yet) for chute_id='3b1c'"}`), "b/two", 200, ""},
		{"500", status(500, `{"detail":"Internal Server Error"}`), "b/two", 200, ""},
		{"502", status(502, `<html>bad gateway</html>`), "b/two", 200, ""},
		{"504", status(504, ``), "b/two", 200, ""},
		{"404 listed model", status(404, `{"detail":"No matching chute found!"}`), "b/two", 200, ""},
		{"429 capacity", status(429, `{"detail":"Infrastructure is at maximum capacity, try again later"}`), "b/two", 200, ""},
		{"200 then hang", hangAfterHeaders, "b/two", 200, ""},
		{"hang before headers", hangBeforeHeaders, "b/two", 200, ""},
		{"bare error line first", errorFirstEvent, "b/two", 200, ""},
		{"data error event first", dataErrorFirst, "b/two", 200, ""},
		{"400 returned", status(400, `{"detail":"bad temperature"}`), "", 400, "upstream_rejected"},
		{"422 returned", status(422, `{"detail":[{"msg":"field required"}]}`), "", 422, "upstream_rejected"},
		{"413 returned", status(413, `{"detail":"too big"}`), "", 413, "upstream_rejected"},
		{"401 invalid key", status(401, `{"detail":"Invalid token or user not found"}`), "", 401, "invalid_api_key"},
		{"403 invalid key", status(403, `{"detail":"Missing or invalid authorization header(s)"}`), "", 401, "invalid_api_key"},
		{"402 payment", status(402, `{"detail":"Quota exceeded and account balance is $0.0, please pay with fiat or send tao to 5Xyz"}`), "", 402, "payment_required"},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tt.name, stream), func(t *testing.T) {
				f, up := newFake(t)
				f.models = []string{"a/one", "b/two"}
				f.set("a/one", tt.first)
				f.set("b/two", ok("b/two"))
				cfg := testConfig(t, up.URL, func(c *config.Config) {
					c.Models = []config.Model{{ID: "a/one", Fallbacks: []string{"b/two"}}}
					c.Upstream.FirstByteTimeout = config.Duration(300 * time.Millisecond)
				})
				ts, _, _ := startProxy(t, cfg)
				res := chat(t, ts.URL, "a/one", stream)
				if res.status != tt.wantStatus {
					t.Fatalf("status %d, want %d: %s", res.status, tt.wantStatus, res.body)
				}
				if tt.wantModel != "" {
					if m := res.header.Get("X-Chutes-Proxy-Model"); m != tt.wantModel {
						t.Fatalf("served by %q, want %q", m, tt.wantModel)
					}
					if a := res.header.Get("X-Chutes-Proxy-Attempts"); a != "2" {
						t.Fatalf("attempts %q, want 2", a)
					}
					if !strings.Contains(res.body, "from") || !strings.Contains(res.body, "b/two") {
						t.Fatalf("body %q", res.body)
					}
					if strings.Contains(res.body, "error") {
						t.Fatalf("the failed model's error reached the client: %q", res.body)
					}
					return
				}
				if res.code != tt.wantCode || res.message == "" {
					t.Fatalf("code %q, want %q: %s", res.code, tt.wantCode, res.body)
				}
				if f.count("b/two") != 0 {
					t.Fatal("fell over on a non-trigger")
				}
				// a/one's answer, and for a refused key (401/402/403)
				// b/two listed as skipped: Chutes would refuse it too.
				if len(res.attempts) == 0 || res.attempts[0]["model"] != "a/one" {
					t.Fatalf("attempts %v", res.attempts)
				}
				for _, a := range res.attempts[1:] {
					if a["status"] != float64(0) || !strings.HasPrefix(a["reason"].(string), "skipped: chutes refused") {
						t.Fatalf("attempts %v: only skips may follow a/one's", res.attempts)
					}
				}
			})
		}
	}
}

func TestFailoverConnectionRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	cfg := testConfig(t, dead, nil)
	ts, _, _ := startProxy(t, cfg)
	res := chat(t, ts.URL, "a/one", false)
	if res.status != 503 || res.code != "all_models_unavailable" || !strings.Contains(res.message, "connection failed") {
		t.Fatalf("%d %s %s", res.status, res.code, res.message)
	}
}

func TestFallbackBodyOnlyModelChanges(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", status(503, `{"detail":"No instances available (yet)"}`))
	f.set("Qwen/Qwen2.5-72B-Instruct", ok("q"))
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto"}, Fallbacks: []string{"Qwen/Qwen2.5-72B-Instruct"}}}
	})
	ts, _, _ := startProxy(t, cfg)
	body := `{"top_k":40, "model" :"auto","min_p":0.050,"messages":[{"role":"user","content":"\u00e9"}],"logit_bias":{}}`
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	f.mu.Lock()
	first, second := string(f.bodies["a/one"]), string(f.bodies["Qwen/Qwen2.5-72B-Instruct"])
	f.mu.Unlock()
	if first != strings.Replace(body, `"auto"`, `"a/one"`, 1) {
		t.Fatalf("first body %s", first)
	}
	if second != strings.Replace(body, `"auto"`, `"Qwen/Qwen2.5-72B-Instruct"`, 1) {
		t.Fatalf("fallback body %s", second)
	}
}

// TestIdleCutMidStream: a committed stream that goes silent ends with the
// stream_interrupted event and a closed connection.
func TestIdleCutMidStream(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	cfg := testConfig(t, up.URL, func(c *config.Config) { c.Upstream.IdleTimeout = config.Duration(200 * time.Millisecond) })
	ts, _, _ := startProxy(t, cfg)
	start := time.Now()
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"a/one","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Error("connection ended cleanly: a cut stream must not look complete")
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("idle_timeout did not cut the stream")
	}
	s := string(b)
	if !strings.HasPrefix(s, "data: {\"choices\"") || !strings.Contains(s, `"code":"stream_interrupted"`) || !strings.Contains(s, "idle_timeout") {
		t.Fatalf("stream %q", s)
	}
}

// TestMidStreamErrorLine: Chutes' bare error line after the commit becomes
// the stream_interrupted event and is never passed on as is.
func TestMidStreamErrorLine(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\njunk line\n")
		io.WriteString(w, `{"error":"Unhandled exception during response stream: boom"}`+"\n")
	})
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"a/one","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	s := string(b)
	if strings.Contains(s, "junk line") || strings.Contains(s, "\n{\"error\"") {
		t.Fatalf("non-SSE line passed on: %q", s)
	}
	if !strings.Contains(s, `data: {"error":{"message":`) || !strings.Contains(s, "boom") || !strings.Contains(s, "stream_interrupted") {
		t.Fatalf("stream %q", s)
	}
}

func TestDiagnostics(t *testing.T) {
	f, up := newFake(t)
	f.models = []string{"deepseek-ai/DeepSeek-R1", "Qwen/Qwen2.5-72B-Instruct"}
	f.set("busy/one", status(429, `{"detail":"Infrastructure is at maximum capacity, try again later"}`))
	f.set("busy/two", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(429)
		io.WriteString(w, `{"detail":"model is under maintenance"}`)
	})
	f.set("down/one", status(503, `{"detail":"No instances available (yet) for chute_id='x'"}`))
	f.set("slow/two", hangBeforeHeaders)
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{
			{ID: "busy/one", Fallbacks: []string{"busy/two"}},
			{ID: "down/one", Fallbacks: []string{"slow/two"}},
		}
		c.Upstream.FirstByteTimeout = config.Duration(200 * time.Millisecond)
	})
	ts, _, _ := startProxy(t, cfg)

	t.Run("every model 429", func(t *testing.T) {
		res := chat(t, ts.URL, "busy/one", false)
		if res.status != 429 || res.code != "rate_limit_exceeded" || res.header.Get("Retry-After") != "1" {
			t.Fatalf("%d %s retry-after %q: %s", res.status, res.code, res.header.Get("Retry-After"), res.message)
		}
	})
	t.Run("all unavailable names each model", func(t *testing.T) {
		res := chat(t, ts.URL, "down/one", true)
		if res.status != 503 || res.code != "all_models_unavailable" {
			t.Fatalf("%d %s", res.status, res.code)
		}
		for _, want := range []string{"down/one: No instances available", "slow/two: no token after 200ms", "fallbacks"} {
			if !strings.Contains(res.message, want) {
				t.Errorf("message lacks %q: %s", want, res.message)
			}
		}
		if len(res.attempts) != 2 || res.attempts[0]["status"] != float64(503) {
			t.Fatalf("attempts %v", res.attempts)
		}
	})
	t.Run("unknown model did you mean", func(t *testing.T) {
		res := chat(t, ts.URL, "deepseek-ai/deepseek-r1", false)
		if res.status != 404 || res.code != "model_not_found" || !strings.Contains(res.message, "Did you mean deepseek-ai/DeepSeek-R1?") {
			t.Fatalf("%d %s: %s", res.status, res.code, res.message)
		}
	})
}

func TestWrongBaseURL(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(htmlPage))
	defer up.Close()
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))
	res := chat(t, ts.URL, "a/one", false)
	if res.code != "upstream_not_api" || !strings.Contains(res.message, "https://llm.chutes.ai/v1") {
		t.Fatalf("%d %s: %s", res.status, res.code, res.message)
	}
}

func TestInvalidKeyMessage(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", status(401, `{"detail":"Invalid token or user not found"}`))
	cfg := testConfig(t, up.URL, func(c *config.Config) { c.Upstream.APIKey = "sk-proj-abcdefghijklmnop" })
	ts, _, logs := startProxy(t, cfg)
	res := chat(t, ts.URL, "a/one", false)
	if res.code != "invalid_api_key" || !strings.Contains(res.message, "does not start with cpk_") || !strings.Contains(res.message, "sk-pro…") {
		t.Fatalf("%s: %s", res.code, res.message)
	}
	if strings.Contains(res.body, "sk-proj-abcdefghijklmnop") || strings.Contains(logs.String(), "abcdefghijklmnop") {
		t.Fatal("key leaked")
	}
}

// TestOpenAIClient drives the proxy with the official Go SDK, plain and
// streaming, through a chain whose first model is down.
func TestOpenAIClient(t *testing.T) {
	f, up := newFake(t)
	f.models = []string{"a/one", "b/two"}
	f.set("a/one", status(503, `{"detail":"No instances available (yet) for chute_id='x'"}`))
	f.set("b/two", ok("b/two"))
	f.set("pay/one", status(402, `{"detail":"Quota exceeded and account balance is $0.0"}`))
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto"}, Fallbacks: []string{"b/two"}}}
	})
	ts, _, _ := startProxy(t, cfg)
	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var raw *http.Response
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "auto",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "hello from b/two" || raw.Header.Get("X-Chutes-Proxy-Model") != "b/two" {
		t.Fatalf("plain: %q via %q", resp.Choices[0].Message.Content, raw.Header.Get("X-Chutes-Proxy-Model"))
	}

	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "auto",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithHeader("Accept", "text/event-stream"))
	var text strings.Builder
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "hello from b/two" {
		t.Fatalf("stream text %q", text.String())
	}

	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "pay/one",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 402 || apiErr.Code != "payment_required" || !strings.Contains(apiErr.Message, "300 requests a day") {
		t.Fatalf("err %v", err)
	}
}

// TestStreamInterruptedInSDK: a stream cut after the commit is an error in
// the SDK, not a silently short reply.
func TestStreamInterruptedInSDK(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		io.WriteString(w, `{"error":"Unhandled exception during response stream: boom"}`+"\n")
	})
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))
	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: "a/one", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	n := 0
	for stream.Next() {
		n++
	}
	if err := stream.Err(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("after %d chunks: err %v", n, err)
	}
}

func TestModelsEndpoint(t *testing.T) {
	f, up := newFake(t)
	f.models = []string{"deepseek-ai/DeepSeek-R1"}
	cfg := testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "deepseek-ai/DeepSeek-R1", Aliases: []string{"r1"}, Fallbacks: []string{"x/y"}}}
	})
	ts, _, _ := startProxy(t, cfg)
	for _, path := range []string{"/v1/models", "/models", "/v1/chat/completions/models"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var list struct {
			Data []struct {
				ID            string `json:"id"`
				ContextLength int    `json:"context_length"`
				AliasFor      string `json:"alias_for"`
			} `json:"data"`
		}
		json.NewDecoder(resp.Body).Decode(&list)
		resp.Body.Close()
		got := map[string]string{}
		for _, d := range list.Data {
			got[d.ID] = d.AliasFor
		}
		if _, ok := got["deepseek-ai/DeepSeek-R1"]; !ok || got["r1"] != "deepseek-ai/DeepSeek-R1" || list.Data[0].ContextLength != 65536 {
			t.Fatalf("%s: %+v", path, list.Data)
		}
	}
	// Upstream unreachable: the configured models and aliases still answer.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	ts2, _, _ := startProxy(t, testConfig(t, dead, func(c *config.Config) { c.Models = cfg.Models }))
	start := time.Now()
	resp, err := http.Get(ts2.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"r1"`) || !strings.Contains(string(b), "DeepSeek-R1") || time.Since(start) > 4*time.Second {
		t.Fatalf("offline models: %d %s", resp.StatusCode, b)
	}
}

func TestCORS(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", ok("a/one"))
	ts, _, _ := startProxy(t, testConfig(t, up.URL, func(c *config.Config) { c.Compat.CORSOrigins = []string{"https://janitorai.com"} }))
	pre := func(origin string) *http.Response {
		req, _ := http.NewRequest("OPTIONS", ts.URL+"/v1/chat/completions", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
		req.Header.Set("Access-Control-Request-Private-Network", "true")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	r := pre("https://janitorai.com")
	if r.StatusCode != 204 || r.Header.Get("Access-Control-Allow-Origin") != "https://janitorai.com" ||
		r.Header.Get("Access-Control-Allow-Private-Network") != "true" || !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "authorization") {
		t.Fatalf("allowed preflight: %d %v", r.StatusCode, r.Header)
	}
	r = pre("https://evil.example")
	if r.Header.Get("Access-Control-Allow-Origin") != "" || r.Header.Get("Access-Control-Allow-Private-Network") != "" {
		t.Fatalf("other origin got CORS headers: %v", r.Header)
	}
}

func TestErrorsAsMessages(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", status(503, `{"detail":"No instances available (yet)"}`))
	ts, _, _ := startProxy(t, testConfig(t, up.URL, func(c *config.Config) { c.Compat.ErrorsAsMessages = true }))
	res := chat(t, ts.URL, "a/one", false)
	if res.status != 200 || !strings.Contains(res.body, `"role":"assistant"`) || !strings.Contains(res.body, "No model could answer") {
		t.Fatalf("plain: %d %s", res.status, res.body)
	}
	res = chat(t, ts.URL, "a/one", true)
	if res.status != 200 || !strings.Contains(res.body, "data: [DONE]") || !strings.Contains(res.body, "No model could answer") || res.header.Get("X-Chutes-Proxy-Error") != "all_models_unavailable" {
		t.Fatalf("stream: %d %s", res.status, res.body)
	}
	sc := bufio.NewScanner(strings.NewReader(res.body))
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "data: ") {
			t.Fatalf("non-SSE line %q", l)
		}
	}
}

// TestPlainReplyCutFailsOver: a non-stream reply cut halfway is that
// model's failure; the client gets the next model's whole reply.
func TestPlainReplyCutFailsOver(t *testing.T) {
	f, up := newFake(t)
	f.set("cut/one", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "400")
		io.WriteString(w, `{"id":"x","choices":[{"message":{"content":"half`)
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	})
	f.set("b/two", ok("b/two"))
	ts, _, _ := startProxy(t, testConfig(t, up.URL, func(c *config.Config) {
		c.Models = []config.Model{{ID: "cut/one", Fallbacks: []string{"b/two"}}}
	}))
	res := chat(t, ts.URL, "cut/one", false)
	if res.status != 200 || res.header.Get("X-Chutes-Proxy-Model") != "b/two" || !strings.Contains(res.body, "hello from b/two") {
		t.Fatalf("%d via %q: %s", res.status, res.header.Get("X-Chutes-Proxy-Model"), res.body)
	}
}

// TestDoneHearsEveryOutcome: the Done hook hears how each forwarded request
// ended, including a stream cut after the commit (whose connection is
// aborted, so nothing can be read from its response afterwards).
func TestDoneHearsEveryOutcome(t *testing.T) {
	f, up := newFake(t)
	f.set("a/one", ok("a/one"))
	f.set("down/one", status(503, `{"detail":"No instances available (yet)"}`))
	f.set("cut/one", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n")
		http.NewResponseController(w).Flush()
		io.WriteString(w, `{"error":"Unhandled exception during response stream: boom"}`+"\n")
	})
	var mu sync.Mutex
	var got []string
	cfg := testConfig(t, up.URL, nil)
	srv := New(Options{Config: cfg, Done: func(served, outcome string) {
		mu.Lock()
		got = append(got, served+"|"+outcome)
		mu.Unlock()
	}})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() { ts.Close(); srv.Close() })
	chat(t, ts.URL, "a/one", false)
	chat(t, ts.URL, "down/one", false)
	chat(t, ts.URL, "cut/one", true)
	http.Get(ts.URL + "/healthz") // not forwarded: not heard
	mu.Lock()
	defer mu.Unlock()
	want := "[a/one|served |all_models_unavailable cut/one|stream_interrupted]"
	if fmt.Sprint(got) != want {
		t.Fatalf("Done heard %v, want %s", got, want)
	}
}
