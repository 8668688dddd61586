package clients

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// JanitorAI calls the proxy from the browser page at https://janitorai.com:
// every request carries that Origin, POSTs with Authorization and
// Content-Type: application/json are preflighted, and Chrome adds
// Access-Control-Request-Private-Network to the preflight because a public
// page is calling 127.0.0.1. Its users paste the full
// .../v1/chat/completions URL, and some clients append /chat/completions
// again.

const janitor = "https://janitorai.com"

// jaiBody is a JanitorAI-like chat: a character prompt, a streamed reply.
func jaiBody(stream bool) []byte {
	s := "false"
	if stream {
		s = "true"
	}
	return []byte(`{"model":"` + r1 + `","messages":[{"role":"system","content":"You are Kael, a brooding knight. <Kael's persona>"},` +
		`{"role":"user","content":"*waves* Hi Kael!"}],"temperature":0.9,"max_tokens":600,"stream":` + s + `}`)
}

// jaiSend sends what the JanitorAI page's fetch sends, to the path the user
// pasted.
func jaiSend(t *testing.T, method, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Origin", janitor)
	req.Header.Set("Referer", janitor+"/")
	req.Header.Set("Authorization", "Bearer cpk_user0123456789abcdef")
	req.Header.Set("Sec-Fetch-Mode", "cors")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// R1's two ways of showing its thinking: reasoning_content deltas (Chutes'
// vLLM/SGLang reasoning parser), or <think> text inside content.
var (
	r1Events = []string{
		`{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The user waves. Kael is brooding"},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"content":null,"reasoning_content":", so a curt nod <fits>."},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"content":"*Kael nods.*","reasoning_content":null},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`,
	}
	thinkEvents = []string{
		`{"id":"c2","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"role":"assistant","content":"<think>\n"},"finish_reason":null}]}`,
		`{"id":"c2","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"content":"He is brooding; keep it short.\n</think>"},"finish_reason":null}]}`,
		`{"id":"c2","object":"chat.completion.chunk","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"delta":{"content":"\n\n*Kael nods.*"},"finish_reason":"stop"}]}`,
	}
	r1JSON    = `{"id":"c3","object":"chat.completion","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"message":{"role":"assistant","content":"*Kael nods.*","reasoning_content":"The user waves. Kael is brooding, so a curt nod <fits>."},"finish_reason":"stop"}],"usage":{"prompt_tokens":30,"completion_tokens":20,"total_tokens":50}}`
	thinkJSON = `{"id":"c4","object":"chat.completion","created":1700000000,"model":"` + r1 + `","choices":[{"index":0,"message":{"role":"assistant","content":"<think>\nHe is brooding; keep it short.\n</think>\n\n*Kael nods.*"},"finish_reason":"stop"}]}`
)

// TestJanitorAIPastedURL: whatever form of the URL the user pasted, the chat
// reaches Chutes' /v1/chat/completions with the body unchanged, R1's
// reasoning (reasoning_content or <think> text) comes back untouched, and
// the browser may read the answer.
func TestJanitorAIPastedURL(t *testing.T) {
	replies := []struct {
		name   string
		plain  string
		events []string
	}{
		{"reasoning_content", r1JSON, r1Events},
		{"think tags", thinkJSON, thinkEvents},
	}
	paths := []string{"/v1/chat/completions", "/v1/chat/completions/chat/completions", "/chat/completions", "/v1/chat/completions/"}
	for _, rp := range replies {
		for _, path := range paths {
			for _, stream := range []bool{false, true} {
				name := rp.name + path
				if stream {
					name += "/stream"
				}
				t.Run(name, func(t *testing.T) {
					f := newFake(t, r1)
					f.set(r1, byRequest(jsonReply(rp.plain), sseReply(0, rp.events...)))
					base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
						c.Upstream.APIKey = ""
						c.Compat.CORSOrigins = []string{janitor}
					}))
					body := jaiBody(stream)
					resp, got := jaiSend(t, http.MethodPost, base+path, body)
					want := rp.plain
					if stream {
						want = sseBody(rp.events...)
					}
					if resp.StatusCode != 200 || string(got) != want {
						t.Errorf("JanitorAI got %d:\n%s\nwant the upstream's bytes:\n%s", resp.StatusCode, got, want)
					}
					if resp.Header.Get("Access-Control-Allow-Origin") != janitor ||
						!strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Chutes-Proxy-Model") {
						t.Errorf("the page may not read the answer: %v", resp.Header)
					}
					up := f.last(t, r1)
					if up.Path != "/v1/chat/completions" || !bytes.Equal(up.Body, body) {
						t.Errorf("Chutes received %s:\n%s", up.Path, up.Body)
					}
					for _, h := range []string{"Origin", "Referer", "Sec-Fetch-Mode", "Sec-Fetch-Site"} {
						if v := up.Header.Get(h); v != "" {
							t.Errorf("the browser's %s reached Chutes: %q", h, v)
						}
					}
					if a := up.Header.Get("Authorization"); a != "Bearer cpk_user0123456789abcdef" {
						t.Errorf("Chutes received Authorization %q", a)
					}
				})
			}
		}
	}

	// The model list under a pasted URL, for pages that fetch one.
	f := newFake(t, r1, mistral)
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = []string{janitor} }))
	resp, got := jaiSend(t, http.MethodGet, base+"/v1/chat/completions/models", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"id":"`+mistral+`"`) || resp.Header.Get("Access-Control-Allow-Origin") != janitor {
		t.Errorf("models under a pasted URL: %d %s", resp.StatusCode, got)
	}
}

// TestJanitorAICORS: the preflight Chrome sends for the JanitorAI page is
// answered for an origin in cors_origins, with Private Network Access when
// asked; any other origin gets no CORS header at all, so the browser blocks
// the page.
func TestJanitorAICORS(t *testing.T) {
	tests := []struct {
		name    string
		origins []string
		origin  string
		pna     bool
		allowed bool
	}{
		{"janitorai, private network asked", []string{janitor}, janitor, true, true},
		{"janitorai, not asked", []string{janitor}, janitor, false, true},
		{"janitorai among others, trailing slash in config", []string{"https://example.org", janitor + "/"}, janitor, true, true},
		{"other site", []string{janitor}, "https://evil.example", true, false},
		{"look-alike host", []string{janitor}, "https://janitorai.com.evil.example", true, false},
		{"same host over http", []string{janitor}, "http://janitorai.com", true, false},
		{"subdomain", []string{janitor}, "https://www.janitorai.com", true, false},
		{"cors_origins empty", nil, janitor, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, r1)
			f.set(r1, chatReply(r1, "hi"))
			base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = tt.origins }))

			req, _ := http.NewRequest(http.MethodOptions, base+"/v1/chat/completions", nil)
			req.Header.Set("Origin", tt.origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			req.Header.Set("Access-Control-Request-Headers", "authorization,content-type")
			if tt.pna {
				req.Header.Set("Access-Control-Request-Private-Network", "true")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			h := resp.Header
			if !tt.allowed {
				for k := range h {
					if strings.HasPrefix(k, "Access-Control-") {
						t.Errorf("preflight from %s got %s: %q", tt.origin, k, h.Get(k))
					}
				}
				if len(f.requests()) != 0 {
					t.Error("a preflight reached Chutes")
				}
				return
			}
			if resp.StatusCode != http.StatusNoContent || h.Get("Access-Control-Allow-Origin") != tt.origin ||
				!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") ||
				!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "authorization") ||
				!strings.Contains(strings.ToLower(h.Get("Access-Control-Allow-Headers")), "content-type") ||
				!strings.Contains(h.Get("Vary"), "Origin") {
				t.Errorf("preflight: %d %v", resp.StatusCode, h)
			}
			if got := h.Get("Access-Control-Allow-Private-Network"); (got == "true") != tt.pna {
				t.Errorf("Access-Control-Allow-Private-Network %q, asked %v", got, tt.pna)
			}
			if len(f.requests()) != 0 {
				t.Error("a preflight reached Chutes")
			}
		})
	}
}
