package clients

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of the proxy's transport and of the
		// clients are closed in t.Cleanup, but their reader goroutines may
		// still be unwinding when goleak looks; they exit on their own.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

// testKey is the Chutes key the proxy is configured with unless a test says
// otherwise; fake upstreams check for it.
const testKey = "cpk_test0123456789abcdef.secretsecretsecret"

// newConfig is the embedded default config (no file, no environment)
// pointed at upstream, with short time-outs and edit applied.
func newConfig(t testing.TB, upstream string, edit func(*config.Config)) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = upstream + "/v1"
	cfg.Upstream.APIKey = testKey
	cfg.Upstream.FirstByteTimeout = config.Duration(3 * time.Second)
	cfg.Upstream.IdleTimeout = config.Duration(3 * time.Second)
	// These tests pin that a plain request reaches Chutes byte for byte and
	// its answer comes back the same: stream_plain, which sends it as a
	// stream and assembles the answer, is tested on its own
	// (replies_test.go).
	cfg.Upstream.StreamPlain = false
	cfg.Models = nil
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

// startProxy serves a proxy for cfg over loopback and returns its base URL
// (no trailing slash, no /v1).
func startProxy(t testing.TB, cfg *config.Config) string {
	t.Helper()
	srv := proxy.New(proxy.Options{Config: cfg})
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		srv.Close()
	})
	return ts.URL
}

// httptestServer serves h over loopback until the test ends.
func httptestServer(t testing.TB, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// deadURL is a loopback URL nobody listens on: connections are refused.
func deadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// upRequest is one request as the fake upstream received it.
type upRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
	Model  string
}

// fakeChutes is a scripted Chutes: per model a handler, a /models list, and a
// record of every inference request in order, bytes as received.
type fakeChutes struct {
	URL    string
	mu     sync.Mutex
	act    map[string]http.HandlerFunc
	models []string
	reqs   []upRequest
}

func newFake(t testing.TB, models ...string) *fakeChutes {
	t.Helper()
	f := &fakeChutes{act: map[string]http.HandlerFunc{}, models: models}
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	f.URL = ts.URL
	return f
}

func (f *fakeChutes) set(model string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.act[model] = h
}

// requests returns what the upstream received so far.
func (f *fakeChutes) requests() []upRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]upRequest(nil), f.reqs...)
}

// last returns the last request the upstream received for model.
func (f *fakeChutes) last(t testing.TB, model string) upRequest {
	t.Helper()
	rs := f.requests()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Model == model {
			return rs[i]
		}
	}
	t.Fatalf("the upstream received no request for %q (got %d requests)", model, len(rs))
	return upRequest{}
}

func (f *fakeChutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models") {
		f.mu.Lock()
		data := []map[string]any{}
		for _, m := range f.models {
			data = append(data, map[string]any{"id": m, "object": "model", "owned_by": "chutes", "context_length": 65536})
		}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
		return
	}
	b, _ := io.ReadAll(r.Body)
	var req struct {
		Model string `json:"model"`
	}
	_ = json.Unmarshal(b, &req)
	r.Body = io.NopCloser(bytes.NewReader(b))
	f.mu.Lock()
	f.reqs = append(f.reqs, upRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: b, Model: req.Model})
	h := f.act[req.Model]
	f.mu.Unlock()
	if h == nil {
		writeStatus(w, http.StatusNotFound, fmt.Sprintf(`{"detail":"model not found: %s"}`, req.Model))
		return
	}
	h(w, r)
}

func writeStatus(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// status answers every request with code and a JSON body.
func status(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeStatus(w, code, body) }
}

// down is what Chutes answers for a chute with no miner.
var down = status(http.StatusServiceUnavailable, `{"detail":"No instances available (yet) for chute_id='5f0d7c3e-0000-4000-8000-000000000000'"}`)

// jsonReply answers with body as is.
func jsonReply(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { writeStatus(w, http.StatusOK, body) }
}

// sseReply answers with each event as "data: <event>\n\n", flushed one by
// one with gap between them, then "data: [DONE]".
func sseReply(gap time.Duration, events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i, e := range events {
			if i > 0 && gap > 0 {
				select {
				case <-time.After(gap):
				case <-r.Context().Done():
					return
				}
			}
			_, _ = io.WriteString(w, "data: "+e+"\n\n")
			_ = rc.Flush()
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}
}

// sseBody is what sseReply(…, events...) puts on the wire.
func sseBody(events ...string) string {
	var b strings.Builder
	for _, e := range events {
		b.WriteString("data: " + e + "\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	return b.String()
}

// byRequest serves plain or stream as the request body's "stream" says.
func byRequest(plain, stream http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &req)
		r.Body = io.NopCloser(bytes.NewReader(b))
		if req.Stream {
			stream(w, r)
			return
		}
		plain(w, r)
	}
}

// chatJSON is a complete chat.completion from model saying content.
func chatJSON(model, content string) string {
	b, _ := json.Marshal(content)
	return `{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"` + model +
		`","choices":[{"index":0,"message":{"role":"assistant","content":` + string(b) +
		`},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`
}

// chatChunks are chat.completion.chunk events from model, one per piece.
func chatChunks(model string, pieces ...string) []string {
	out := []string{`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"` + model +
		`","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`}
	for _, p := range pieces {
		b, _ := json.Marshal(p)
		out = append(out, `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"`+model+
			`","choices":[{"index":0,"delta":{"content":`+string(b)+`},"finish_reason":null}]}`)
	}
	return append(out, `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"`+model+
		`","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
}

// chatReply serves chatJSON or chatChunks as the request asks.
func chatReply(model string, pieces ...string) http.HandlerFunc {
	return byRequest(jsonReply(chatJSON(model, strings.Join(pieces, ""))), sseReply(0, chatChunks(model, pieces...)...))
}

// errorBody is the proxy's OpenAI-shaped error.
type errorBody struct {
	Error struct {
		Message  string           `json:"message"`
		Type     string           `json:"type"`
		Code     string           `json:"code"`
		Attempts []map[string]any `json:"attempts"`
	} `json:"error"`
}

// parseError decodes b as the proxy's error JSON, failing the test when it
// is not one.
func parseError(t testing.TB, b []byte) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error.Message == "" || e.Error.Code == "" {
		t.Fatalf("not an OpenAI-shaped error (%v): %s", err, b)
	}
	return e
}

// sseData returns the data payloads of an SSE body, in order.
func sseData(body string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if d, ok := strings.CutPrefix(l, "data: "); ok {
			out = append(out, d)
		}
	}
	return out
}

// streamedText joins choices[0].delta.content over the chunks of an SSE
// body, the way chat UIs build the reply.
func streamedText(t testing.TB, body string) string {
	t.Helper()
	var b strings.Builder
	for _, d := range sseData(body) {
		if d == "[DONE]" {
			break
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(d), &c); err != nil {
			t.Fatalf("SSE data is not JSON: %q", d)
		}
		if len(c.Choices) > 0 {
			b.WriteString(c.Choices[0].Delta.Content)
		}
	}
	return b.String()
}
