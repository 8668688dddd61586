package simulator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "cpk_0123456789abcdef0123456789abcdef.0123456789abcdef0123456789abcdef.AbCdEfGhIjKlMnOpQrStUvWxYz012345"

// start serves sim over loopback; the cleanup closes sim first so that
// hanging handlers return before the server waits for them.
func start(t *testing.T, sc Scenario) (*Simulator, *httptest.Server) {
	t.Helper()
	sim := New(sc)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	return sim, srv
}

func one(id string, b Behavior) Scenario {
	return Scenario{Seed: 7, Models: []ModelScenario{{ID: id, Behavior: b}}}
}

// post sends body to path with the test key (or hdr, when given).
func post(t *testing.T, ctx context.Context, srv *httptest.Server, path, body string, hdr map[string]string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if hdr == nil {
		hdr = map[string]string{"Authorization": "Bearer " + testKey}
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return srv.Client().Do(req)
}

func mustPost(t *testing.T, srv *httptest.Server, path, body string) *http.Response {
	t.Helper()
	resp, err := post(t, context.Background(), srv, path, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func chatBody(model string, stream, usage bool) string {
	return fmt.Sprintf(`{"model":%q,"stream":%v,"stream_options":{"include_usage":%v},"messages":[{"role":"user","content":"Say hello to me"}]}`,
		model, stream, usage)
}

func detail(t *testing.T, resp *http.Response) string {
	t.Helper()
	var v struct {
		Detail json.RawMessage `json:"detail"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &v); err != nil || v.Detail == nil {
		t.Fatalf("body %q is not {\"detail\": ...}: %v", body, err)
	}
	var s string
	if json.Unmarshal(v.Detail, &s) == nil {
		return s
	}
	var m struct{ Message string }
	if err := json.Unmarshal(v.Detail, &m); err != nil {
		t.Fatalf("detail %s is neither a string nor {message}", v.Detail)
	}
	return m.Message
}

// sse reads a stream to its end and returns its non-empty lines and the
// error that ended it (nil for a clean end).
func sse(t *testing.T, r io.Reader) ([]string, error) {
	t.Helper()
	br := bufio.NewReader(r)
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if l := strings.TrimRight(line, "\n"); l != "" {
			lines = append(lines, l)
		}
		if err == io.EOF {
			return lines, nil
		}
		if err != nil {
			return lines, err
		}
	}
}

func TestModels(t *testing.T) {
	sc := DefaultScenario()
	sc.Models = append(sc.Models, ModelScenario{ID: "gone/model", Behavior: Behavior{Kind: KindNotFound}})
	sim, srv := start(t, sc)
	for _, path := range []string{"/v1/models", "/models"} {
		t.Run(path, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + path) // no key needed
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var list struct {
				Object string
				Data   []map[string]any
			}
			if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
				t.Fatal(err)
			}
			if list.Object != "list" || len(list.Data) != 4 {
				t.Fatalf("object %q with %d models, want list with 4 (not_found left out)", list.Object, len(list.Data))
			}
			first := list.Data[0]
			if first["id"] != "deepseek-ai/DeepSeek-R1" || first["object"] != "model" ||
				first["context_length"] != float64(163840) || first["max_model_len"] != float64(163840) {
				t.Errorf("first entry = %v", first)
			}
			for _, k := range []string{"created", "owned_by", "pricing", "chute_id"} {
				if _, ok := first[k]; !ok {
					t.Errorf("entry lacks %q", k)
				}
			}
		})
	}
	if n := sim.ModelListRequests(); n != 2 {
		t.Errorf("ModelListRequests = %d, want 2", n)
	}
}

func TestAuth(t *testing.T) {
	const model = "m/healthy"
	tests := []struct {
		name       string
		sc         func(*Scenario)
		hdr        map[string]string
		wantStatus int
		wantDetail string
	}{
		{"no header", nil, map[string]string{}, 401, "Missing or invalid authorization header(s)"},
		{"not bearer", nil, map[string]string{"Authorization": "Basic " + testKey}, 401, "Missing or invalid authorization header(s)"},
		{"bearer without key", nil, map[string]string{"Authorization": "Bearer"}, 401, "Missing or invalid authorization header(s)"},
		{"openai key", nil, map[string]string{"Authorization": "Bearer sk-proj-abc"}, 401, "Invalid token or user not found"},
		{"key with inner space", nil, map[string]string{"Authorization": "Bearer  " + testKey}, 401, "Invalid token or user not found"},
		{"any cpk key", nil, map[string]string{"Authorization": "Bearer cpk_whatever"}, 200, ""},
		{"lower-case scheme", nil, map[string]string{"Authorization": "bearer cpk_whatever"}, 200, ""},
		{"x-api-key", nil, map[string]string{"X-API-Key": testKey}, 200, ""},
		{"listed key", func(sc *Scenario) { sc.Keys = []string{testKey} }, nil, 200, ""},
		{"unlisted cpk key", func(sc *Scenario) { sc.Keys = []string{testKey} }, map[string]string{"Authorization": "Bearer cpk_other"}, 401, "Invalid token or user not found"},
		{"accept any key, none sent", func(sc *Scenario) { sc.AcceptAnyKey = true }, map[string]string{}, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := one(model, Behavior{})
			if tt.sc != nil {
				tt.sc(&sc)
			}
			sim, srv := start(t, sc)
			resp, err := post(t, context.Background(), srv, "/v1/chat/completions", chatBody(model, false, false), tt.hdr)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if tt.wantDetail != "" {
				if d := detail(t, resp); d != tt.wantDetail {
					t.Errorf("detail %q, want %q", d, tt.wantDetail)
				}
				if got := sim.Outcomes(model)[OutcomeUnauthorized]; got != 1 {
					t.Errorf("unauthorized outcomes = %d, want 1", got)
				}
			}
			if sim.Requests(model) != 1 {
				t.Errorf("Requests = %d, want 1 (refused requests count too)", sim.Requests(model))
			}
		})
	}
}

func TestErrorResponses(t *testing.T) {
	uuid := `[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}`
	tests := []struct {
		name       string
		sc         Scenario
		method     string
		path       string
		body       string
		wantStatus int
		wantDetail string // a regexp
		wantRetry  string
	}{
		{name: "down", sc: one("a/b", Behavior{Kind: KindDown}), wantStatus: 503,
			wantDetail: `^No instances available \(yet\) for chute_id='` + uuid + `'$`},
		{name: "overloaded", sc: one("a/b", Behavior{Kind: KindOverloaded}), wantStatus: 429,
			wantDetail: `^Infrastructure is at maximum capacity, try again later$`},
		{name: "overloaded with retry-after", sc: one("a/b", Behavior{Kind: KindOverloaded, RetryAfter: 7}), wantStatus: 429,
			wantDetail: `^Infrastructure is at maximum capacity`, wantRetry: "7"},
		{name: "payment required", sc: one("a/b", Behavior{Kind: KindPaymentRequired}), wantStatus: 402,
			wantDetail: `^Quota exceeded and account balance is \$0\.0, please pay with fiat or send tao to `},
		{name: "not found", sc: one("a/b", Behavior{Kind: KindNotFound}), wantStatus: 404,
			wantDetail: `^model not found: a/b$`},
		{name: "model not in scenario", sc: one("x/y", Behavior{}), wantStatus: 404,
			wantDetail: `^model not found: a/b$`},
		{name: "default behavior", sc: Scenario{DefaultBehavior: &Behavior{Kind: KindDown}}, wantStatus: 503,
			wantDetail: `^No instances available`},
		{name: "down, streaming", sc: one("a/b", Behavior{Kind: KindDown}), body: chatBody("a/b", true, true), wantStatus: 503,
			wantDetail: `^No instances available`},
		{name: "flaky always failing", sc: one("a/b", Behavior{Kind: KindFlaky, FailureRate: 1}), wantStatus: 503,
			wantDetail: `^No instances available`},
		{name: "not json", sc: one("a/b", Behavior{}), body: `{"model":`, wantStatus: 400, wantDetail: `^Invalid request body`},
		{name: "no model", sc: one("a/b", Behavior{}), body: `{"messages":[]}`, wantStatus: 400, wantDetail: `model is required`},
		{name: "unknown kind", sc: one("a/b", Behavior{Kind: "sleepy"}), wantStatus: 500, wantDetail: `unknown behavior kind`},
		{name: "unknown path", sc: one("a/b", Behavior{}), path: "/v1/nope", wantStatus: 404, wantDetail: `^Not Found$`},
		{name: "wrong method", sc: one("a/b", Behavior{}), method: http.MethodGet, wantStatus: 405, wantDetail: `^Method Not Allowed$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, tt.sc)
			method, path, body := tt.method, tt.path, tt.body
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v1/chat/completions"
			}
			if body == "" {
				body = chatBody("a/b", false, false)
			}
			req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testKey)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After %q, want %q", got, tt.wantRetry)
			}
			if d := detail(t, resp); !regexp.MustCompile(tt.wantDetail).MatchString(d) {
				t.Errorf("detail %q does not match %s", d, tt.wantDetail)
			}
		})
	}
}

func TestGarbage(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			_, srv := start(t, one("a/b", Behavior{Kind: KindGarbage}))
			resp := mustPost(t, srv, "/chat/completions", chatBody("a/b", stream, false))
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
				!strings.HasPrefix(string(body), "<html>") {
				t.Errorf("status %d, type %q, body %.20q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		})
	}
}

func TestNonStream(t *testing.T) {
	reasoner := Behavior{Reasoning: "Think first.", Reply: "Hi there you"}
	tests := []struct {
		name  string
		b     Behavior
		path  string
		body  string
		check func(t *testing.T, v map[string]any)
	}{
		{"chat", Behavior{}, "/v1/chat/completions", chatBody("a/b", false, false), func(t *testing.T, v map[string]any) {
			msg := choice0(t, v)["message"].(map[string]any)
			if v["object"] != "chat.completion" || msg["role"] != "assistant" || msg["content"] != DefaultReply {
				t.Errorf("got %v", v)
			}
			if _, ok := msg["reasoning_content"]; ok {
				t.Error("reasoning_content on a model without reasoning")
			}
			wantUsage(t, v, 5, 13) // "user" counts: every string in messages does
		}},
		{"chat, reasoning model", reasoner, "/chat/completions", chatBody("a/b", false, false), func(t *testing.T, v map[string]any) {
			msg := choice0(t, v)["message"].(map[string]any)
			if msg["content"] != "Hi there you" || msg["reasoning_content"] != "Think first." {
				t.Errorf("message %v", msg)
			}
			wantUsage(t, v, 5, 5)
		}},
		{"chat, max_tokens", reasoner, "/v1/chat/completions", `{"model":"a/b","max_tokens":1,"messages":[]}`, func(t *testing.T, v map[string]any) {
			c := choice0(t, v)
			msg := c["message"].(map[string]any)
			if msg["content"] != "" || msg["reasoning_content"] != "Think" || c["finish_reason"] != "length" {
				t.Errorf("choice %v", c)
			}
		}},
		{"completions", Behavior{Reply: "one two"}, "/v1/completions", `{"model":"a/b","prompt":"say two words"}`, func(t *testing.T, v map[string]any) {
			if c := choice0(t, v); v["object"] != "text_completion" || c["text"] != "one two" || c["finish_reason"] != "stop" {
				t.Errorf("got %v", v)
			}
			wantUsage(t, v, 3, 2)
		}},
		{"embeddings", Behavior{}, "/embeddings", `{"model":"a/b","input":["a b","c"]}`, func(t *testing.T, v map[string]any) {
			data, _ := v["data"].([]any)
			if v["object"] != "list" || len(data) != 2 {
				t.Fatalf("got %v", v)
			}
			e := data[1].(map[string]any)
			if e["object"] != "embedding" || e["index"] != float64(1) || len(e["embedding"].([]any)) != 16 {
				t.Errorf("second embedding %v", e)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, one("a/b", tt.b))
			resp := mustPost(t, srv, tt.path, tt.body)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			var v map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				t.Fatal(err)
			}
			if v["model"] != "a/b" {
				t.Errorf("model %v", v["model"])
			}
			tt.check(t, v)
		})
	}
}

func choice0(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	cs, _ := v["choices"].([]any)
	if len(cs) != 1 {
		t.Fatalf("choices %v", v["choices"])
	}
	return cs[0].(map[string]any)
}

func wantUsage(t *testing.T, v map[string]any, prompt, completion int) {
	t.Helper()
	u, _ := v["usage"].(map[string]any)
	if u["prompt_tokens"] != float64(prompt) || u["completion_tokens"] != float64(completion) ||
		u["total_tokens"] != float64(prompt+completion) {
		t.Errorf("usage %v, want %d + %d", u, prompt, completion)
	}
}

// streamed is a parsed SSE stream.
type streamed struct {
	chunks    []map[string]any
	reasoning string
	content   string
	done      bool
	order     string // "r" per reasoning delta, "c" per content delta
}

func parseStream(t *testing.T, lines []string) streamed {
	t.Helper()
	var s streamed
	for i, l := range lines {
		data, ok := strings.CutPrefix(l, "data: ")
		if !ok {
			t.Fatalf("line %d %q is not a data: line", i, l)
		}
		if s.done {
			t.Fatalf("data after [DONE]: %q", l)
		}
		if data == "[DONE]" {
			s.done = true
			continue
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		s.chunks = append(s.chunks, c)
		for _, ch := range c["choices"].([]any) {
			ch := ch.(map[string]any)
			if text, ok := ch["text"].(string); ok && text != "" {
				s.content += text
				s.order += "c"
			}
			d, _ := ch["delta"].(map[string]any)
			if r, ok := d["reasoning_content"].(string); ok {
				s.reasoning += r
				s.order += "r"
			}
			if c, ok := d["content"].(string); ok && c != "" {
				s.content += c
				s.order += "c"
			}
		}
	}
	return s
}

func TestStream(t *testing.T) {
	reasoner := Behavior{Reasoning: "Think first, then answer.", Reply: "Hello to you.", TokensPerSecond: 500}
	tests := []struct {
		name      string
		b         Behavior
		path      string
		body      string
		wantUsage bool
		wantOrder string
		object    string
	}{
		{"chat, reasoning, usage", reasoner, "/v1/chat/completions", chatBody("a/b", true, true), true, "rrrrccc", "chat.completion.chunk"},
		{"chat, no usage", Behavior{Reply: "a b"}, "/v1/chat/completions", chatBody("a/b", true, false), false, "cc", "chat.completion.chunk"},
		{"completions", Behavior{Reply: "a b c"}, "/completions", `{"model":"a/b","prompt":"x","stream":true,"stream_options":{"include_usage":true}}`, true, "ccc", "text_completion"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, one("a/b", tt.b))
			resp := mustPost(t, srv, tt.path, tt.body)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			lines, err := sse(t, resp.Body)
			if err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			s := parseStream(t, lines)
			if !s.done {
				t.Error("no data: [DONE]")
			}
			if s.order != tt.wantOrder {
				t.Errorf("delta order %q, want %q (reasoning before content)", s.order, tt.wantOrder)
			}
			if s.reasoning != tt.b.Reasoning || s.content != tt.b.reply() {
				t.Errorf("reasoning %q content %q", s.reasoning, s.content)
			}
			for _, c := range s.chunks {
				if c["object"] != tt.object || c["model"] != "a/b" || c["id"] != s.chunks[0]["id"] {
					t.Errorf("chunk %v", c)
				}
			}
			last := s.chunks[len(s.chunks)-1]
			_, hasUsage := last["usage"]
			if hasUsage != tt.wantUsage {
				t.Fatalf("usage chunk present %v, want %v", hasUsage, tt.wantUsage)
			}
			if hasUsage {
				if len(last["choices"].([]any)) != 0 {
					t.Errorf("usage chunk has choices %v", last["choices"])
				}
				last = s.chunks[len(s.chunks)-2]
			}
			if fr := last["choices"].([]any)[0].(map[string]any)["finish_reason"]; fr != "stop" {
				t.Errorf("finish_reason %v", fr)
			}
		})
	}
}

// A paced stream's first event reaches the client well before the last is
// written, and not before TTFT.
func TestStreamPacing(t *testing.T) {
	const ttft = 50 * time.Millisecond
	_, srv := start(t, one("a/b", Behavior{TTFT: ttft, TokensPerSecond: 50, Reply: "one two three four five six seven eight nine ten"}))
	t0 := time.Now()
	resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", true, false))
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	first := time.Since(t0)
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatal(err)
	}
	total := time.Since(t0)
	if first < ttft {
		t.Errorf("first event after %v, before TTFT %v", first, ttft)
	}
	// 9 gaps of 20ms after the first token; allow for a slow reader.
	if total-first < 100*time.Millisecond {
		t.Errorf("first event at %v, end at %v: not paced", first, total)
	}
}

func TestDropAfter(t *testing.T) {
	for _, n := range []int{0, 1, 3, 40} {
		t.Run(fmt.Sprint("stream, N=", n), func(t *testing.T) {
			sim, srv := start(t, one("a/b", Behavior{Kind: KindDropAfter, DropAfter: n, Reasoning: "hmm well"}))
			resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", true, true))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			lines, err := sse(t, resp.Body)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want a cut connection", err)
			}
			if len(lines) != n+1 {
				t.Fatalf("%d lines, want %d events + the error line: %q", len(lines), n, lines)
			}
			s := parseStream(t, lines[:n])
			if s.done || len(s.chunks) != n {
				t.Errorf("%d chunks, done=%v", len(s.chunks), s.done)
			}
			if n > 3 && !strings.HasPrefix(s.order, "rrc") {
				t.Errorf("order %q: reasoning first", s.order)
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(lines[n]), &e); err != nil || !strings.HasPrefix(e.Error, "Unhandled exception during response stream: ") {
				t.Errorf("last line %q is not the bare error line", lines[n])
			}
			if sim.Outcomes("a/b")[KindDropAfter] != 1 {
				t.Errorf("outcomes %v", sim.Outcomes("a/b"))
			}
		})
	}
	t.Run("non-stream", func(t *testing.T) {
		_, srv := start(t, one("a/b", Behavior{Kind: KindDropAfter, DropAfter: 3}))
		resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false))
		body, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("status %d, read error %v", resp.StatusCode, err)
		}
		if len(body) == 0 || int64(len(body)) != resp.ContentLength/2 {
			t.Errorf("got %d of %d bytes, want half", len(body), resp.ContentLength)
		}
	})
}

func TestErrorFirstEvent(t *testing.T) {
	tests := []struct {
		name   string
		asData bool
		stream bool
		check  func(t *testing.T, body string)
	}{
		{"bare line", false, true, func(t *testing.T, body string) {
			if !strings.HasPrefix(body, `{"error":"Unhandled exception during response stream: `) || !strings.HasSuffix(body, "}\n") {
				t.Errorf("body %q", body)
			}
		}},
		{"data event", true, true, func(t *testing.T, body string) {
			data, ok := strings.CutPrefix(body, "data: ")
			var e struct{ Error struct{ Message string } }
			if !ok || !strings.HasSuffix(data, "\n\n") || json.Unmarshal([]byte(data), &e) != nil || e.Error.Message == "" {
				t.Errorf("body %q", body)
			}
		}},
		{"non-stream", false, false, func(t *testing.T, body string) {
			var e struct{ Error string }
			if json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("body %q", body)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, srv := start(t, one("a/b", Behavior{Kind: KindErrorFirstEvent, ErrorAsData: tt.asData}))
			resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", tt.stream, false))
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("status %d, %v", resp.StatusCode, err)
			}
			want := "application/json"
			if tt.stream {
				want = "text/event-stream"
			}
			if ct := resp.Header.Get("Content-Type"); ct != want {
				t.Errorf("type %q, want %q", ct, want)
			}
			tt.check(t, string(body))
		})
	}
}

// Hanging behaviors give up when the client does; goleak in TestMain and
// the server's Close (which waits for handlers) prove the handler returned.
func TestHangsEndWithClient(t *testing.T) {
	const timeout = 100 * time.Millisecond
	tests := []struct {
		kind        string
		stream      bool
		wantHeaders string // content type; "" = no response at all
	}{
		{KindHang, false, ""},
		{KindHang, true, ""},
		{KindHeadersThenHang, false, "application/json"},
		{KindHeadersThenHang, true, "text/event-stream"},
		{KindHealthy, true, "text/event-stream"}, // a very slow model
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.kind, ", stream=", tt.stream), func(t *testing.T) {
			b := Behavior{Kind: tt.kind}
			if tt.kind == KindHealthy {
				b.TokensPerSecond = 0.01
			}
			sim, srv := start(t, one("a/b", b))
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			t0 := time.Now()
			resp, err := post(t, ctx, srv, "/v1/chat/completions", chatBody("a/b", tt.stream, false), nil)
			if tt.wantHeaders == "" {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Do: %v, want deadline exceeded", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.wantHeaders {
					t.Errorf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					t.Error("body ended without the client giving up")
				}
			}
			if d := time.Since(t0); d > timeout+time.Second {
				t.Errorf("took %v", d)
			}
			if sim.Requests("a/b") != 1 {
				t.Errorf("Requests = %d", sim.Requests("a/b"))
			}
		})
	}
}

func TestCloseUnblocksHangs(t *testing.T) {
	sim, srv := start(t, one("a/b", Behavior{Kind: KindHang}))
	errc := make(chan error, 1)
	go func() {
		resp, err := post(t, context.Background(), srv, "/v1/chat/completions", chatBody("a/b", true, false), nil)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	for sim.Requests("a/b") == 0 {
		time.Sleep(time.Millisecond)
	}
	sim.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("a hang cut by Close looked like a response")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock the hang")
	}
	resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false))
	if resp.StatusCode != 503 {
		t.Errorf("after Close: status %d, want 503", resp.StatusCode)
	}
}

// outcomes runs n sequential requests against a fresh flaky simulator.
func outcomes(t *testing.T, seed uint64, n int) string {
	t.Helper()
	sc := one("a/b", Behavior{Kind: KindFlaky, FailureRate: 0.5})
	sc.Seed = seed
	// Traffic to another model must not shift a/b's sequence.
	sc.Models = append(sc.Models, ModelScenario{ID: "c/d", Behavior: Behavior{Kind: KindFlaky, FailureRate: 0.5}})
	sim, srv := start(t, sc)
	var seq strings.Builder
	for i := range n {
		if seed == 99 && i%2 == 0 {
			mustPost(t, srv, "/v1/chat/completions", chatBody("c/d", false, false))
		}
		resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false))
		io.Copy(io.Discard, resp.Body)
		switch resp.StatusCode {
		case 200:
			seq.WriteByte('.')
		case 503:
			seq.WriteByte('X')
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	o := sim.Outcomes("a/b")
	if o[KindHealthy] != strings.Count(seq.String(), ".") || o[KindDown] != strings.Count(seq.String(), "X") {
		t.Errorf("outcomes %v for %s", o, seq.String())
	}
	return seq.String()
}

func TestFlakyDeterministic(t *testing.T) {
	a, b := outcomes(t, 42, 40), outcomes(t, 42, 40)
	if a != b {
		t.Errorf("same seed, different outcomes:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, ".") || !strings.Contains(a, "X") {
		t.Errorf("failure_rate 0.5 gave %s", a)
	}
	if c := outcomes(t, 7, 40); c == a {
		t.Errorf("seeds 42 and 7 gave the same %s", a)
	}
	// Seed 99 interleaves requests to another model.
	if outcomes(t, 99, 40) != outcomes(t, 99, 20)+outcomes(t, 99, 40)[20:] {
		t.Error("another model's traffic shifted the sequence")
	}
}

func TestLastRequest(t *testing.T) {
	sim, srv := start(t, one("a/b", Behavior{}))
	if h, b := sim.LastRequest("a/b"); h != nil || b != nil {
		t.Error("LastRequest before any request")
	}
	body := chatBody("a/b", false, false)
	mustPost(t, srv, "/v1/chat/completions", body)
	h, got := sim.LastRequest("a/b")
	if string(got) != body || h.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("LastRequest = %v, %q", h, got)
	}
	if sim.Requests("a/b") != 1 || sim.Requests("never/asked") != 0 {
		t.Error("Requests miscounted")
	}
}

func TestSetBehaviorConcurrent(t *testing.T) {
	sim, srv := start(t, one("a/b", Behavior{Kind: KindDown}))
	if resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false)); resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sim.SetBehavior("a/b", Behavior{})
	if resp := mustPost(t, srv, "/v1/chat/completions", chatBody("a/b", false, false)); resp.StatusCode != 200 {
		t.Fatalf("after SetBehavior: status %d", resp.StatusCode)
	}
	sim.SetBehavior("new/model", Behavior{Kind: KindOverloaded})
	if resp := mustPost(t, srv, "/v1/chat/completions", chatBody("new/model", false, false)); resp.StatusCode != 429 {
		t.Fatalf("added model: status %d", resp.StatusCode)
	}

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				if (i+j)%3 == 0 {
					sim.SetBehavior("a/b", Behavior{Kind: []string{KindDown, KindHealthy, KindFlaky}[j%3], FailureRate: 0.5})
					continue
				}
				resp, err := post(t, context.Background(), srv, "/v1/chat/completions", chatBody("a/b", j%2 == 0, true), nil)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sim.Requests("a/b")
				sim.LastRequest("a/b")
			}
		})
	}
	wg.Wait()
}
