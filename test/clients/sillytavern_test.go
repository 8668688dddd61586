package clients

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// SillyTavern ("API: Chat Completion", "Chat Completion Source: Custom
// (OpenAI-compatible)") talks to the proxy from its Node server, not from the
// browser: src/endpoints/backends/chat-completions.js builds the body with
// JSON.stringify (no spaces, fields in this order, undefined ones left out,
// "Additional Parameters" merged at the end) and sends it with node-fetch,
// whose defaults add Accept, User-Agent, Accept-Encoding and
// "Connection: close". The key is 'Bearer ' + readSecret(...): "Bearer " when
// the key field was saved empty, "Bearer undefined" when it never was.

// stBody is the JSON.stringify output for a chat of the default Seraphina
// card with typical sampler settings; min_p, repetition_penalty and
// include_reasoning come from "Additional Parameters".
func stBody(model string, stream bool) []byte {
	return []byte(`{"messages":[{"role":"system","content":"Write Seraphina's next reply in a fictional chat between Seraphina and User."},` +
		`{"role":"system","content":"[Start a new Chat]"},` +
		`{"role":"assistant","content":"*Seraphina tilts her head.* \"Welcome, traveller — tea or café?\" <3"},` +
		`{"role":"user","content":"Café, s'il vous plaît ☕"}],` +
		`"model":"` + model + `","temperature":1,"max_tokens":300,"stream":` + fmt.Sprint(stream) +
		`,"presence_penalty":0,"frequency_penalty":0,"top_p":1,"top_k":0,"stop":[],"logit_bias":{},` +
		`"min_p":0.05,"repetition_penalty":1.1,"include_reasoning":true}`)
}

// stClient is node-fetch as SillyTavern's server uses it: a new connection
// per request, no transparent decompression.
var stClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true}}

// stSend sends what SillyTavern's server sends and returns the raw answer.
func stSend(t *testing.T, method, url, auth string, body []byte) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := stDo(t, method, url, auth, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// stDo is stSend that returns what was read before an error reading the
// body, and the error.
func stDo(t *testing.T, method, url, auth string, body []byte) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // "Connection: close"
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("User-Agent", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)")
	req.Header.Set("Accept-Encoding", "gzip,deflate")
	resp, err := stClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// stShows is what SillyTavern puts on screen for an answer: the reply text
// in the chat, or the text of an error toast. It follows the server's
// handleErrorResponse and forwardFetchResponse and the browser's
// tryParseStreamingError: a non-stream error shows error.message, else a
// status phrase, else "Unknown error occurred" (Chutes' own {"detail": ...}
// is thrown away); a stream error shows a toast only for a JSON body with
// error.message, and a data event with "error" inside a 200 stream.
func stShows(t *testing.T, stream bool, status int, body []byte) (reply, toast string) {
	t.Helper()
	type msg struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	ok := status >= 200 && status < 300
	if !stream {
		var m msg
		_ = json.Unmarshal(body, &m)
		switch {
		case m.Error != nil && m.Error.Message != "":
			return "", m.Error.Message
		case !ok:
			phrases := map[int]string{400: "Bad request", 401: "Unauthorized", 402: "Credit limit reached", 403: "Forbidden",
				404: "Not found", 429: "Too many requests", 451: "Unavailable for legal reasons", 502: "Bad gateway"}
			if p, found := phrases[status]; found {
				return "", p
			}
			return "", "Unknown error occurred"
		case len(m.Choices) > 0:
			return m.Choices[0].Message.Content, ""
		}
		t.Fatalf("SillyTavern would find no reply in %s", body)
	}
	if !ok {
		var m msg
		if json.Unmarshal(body, &m) == nil && m.Error != nil {
			return "", m.Error.Message
		}
		return "", "" // no toast: the reply is just missing
	}
	var b strings.Builder
	for _, d := range sseData(string(body)) {
		if d == "[DONE]" {
			break
		}
		var m msg
		if err := json.Unmarshal([]byte(d), &m); err != nil {
			t.Fatalf("SillyTavern fails on a non-JSON event %q", d)
		}
		if m.Error != nil {
			toast = m.Error.Message
			continue
		}
		if len(m.Choices) > 0 {
			b.WriteString(m.Choices[0].Delta.Content)
		}
	}
	return b.String(), toast
}

// TestSillyTavernModels: SillyTavern's "Connect" asks {base}/models from
// its server, with the saved key or none, and fills "Available Models" from
// data[].id. The list must come fast, aliases included, even when Chutes is
// unreachable or hangs.
func TestSillyTavernModels(t *testing.T) {
	live := newFake(t, r1, mistral)
	hang := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	tests := []struct {
		name     string
		upstream string
		auth     string
		within   time.Duration
		want     []string
	}{
		{"Chutes up", live.URL, "Bearer cpk_user0123456789abcdef", time.Second, []string{r1, mistral, "r1", "auto"}},
		{"Chutes unreachable, key field empty", deadURL(t), "Bearer ", time.Second, []string{r1, "r1", "auto"}},
		{"Chutes hangs, key never saved", hang, "Bearer undefined", 5 * time.Second, []string{r1, "r1", "auto"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := startProxy(t, newConfig(t, tt.upstream, func(c *config.Config) {
				c.Models = []config.Model{{ID: r1, Aliases: []string{"r1", "auto"}, Fallbacks: []string{mistral}}}
			}))
			start := time.Now()
			resp, b := stSend(t, http.MethodGet, base+"/v1/models", tt.auth, nil)
			took := time.Since(start)
			if resp.StatusCode != 200 || took > tt.within {
				t.Fatalf("%d after %v (limit %v): %s", resp.StatusCode, took, tt.within, b)
			}
			var list struct {
				Object string `json:"object"`
				Data   []struct {
					ID string `json:"id"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &list); err != nil || list.Object != "list" {
				t.Fatalf("not a model list (%v): %s", err, b)
			}
			var ids []string
			for _, d := range list.Data {
				ids = append(ids, d.ID)
			}
			for _, w := range tt.want {
				if !slices.Contains(ids, w) {
					t.Errorf("list lacks %q: %v", w, ids)
				}
			}
		})
	}
}

// TestSillyTavernChat replays SillyTavern's chat request through the proxy,
// plain and streaming, with [compat] errors_as_messages off and on, and
// checks the bytes Chutes received and what SillyTavern would show.
func TestSillyTavernChat(t *testing.T) {
	const reply = "*Seraphina pours the café.* \"Here — careful, it's hot.\""
	pieces := []string{"*Seraphina pours the café.* ", "\"Here — careful, ", "it's hot.\""}
	busy := status(429, `{"detail":"Infrastructure is at maximum capacity, try again later"}`)
	scenarios := []struct {
		name    string
		act     map[string]http.HandlerFunc
		cfgKey  string // [upstream] api_key
		auth    string // what SillyTavern sends
		upAuth  string // what Chutes must receive; "" = Chutes is not asked
		served  string // the model that answers; "" = an error
		status  int    // with errors_as_messages off
		code    string
		message string // part of the error message
	}{
		{name: "fallback serves, key in proxy, key field empty",
			act:    map[string]http.HandlerFunc{"a/down": down, "b/ok": chatReply("b/ok", pieces...)},
			cfgKey: testKey, auth: "Bearer ", upAuth: "Bearer " + testKey, served: "b/ok", status: 200},
		{name: "fallback serves, key only in SillyTavern",
			act:    map[string]http.HandlerFunc{"a/down": down, "b/ok": chatReply("b/ok", pieces...)},
			cfgKey: "", auth: "Bearer cpk_user0123456789abcdef", upAuth: "Bearer cpk_user0123456789abcdef", served: "b/ok", status: 200},
		{name: "every model down",
			act:    map[string]http.HandlerFunc{"a/down": down, "b/ok": down},
			cfgKey: testKey, auth: "Bearer undefined", upAuth: "Bearer " + testKey,
			status: 503, code: "all_models_unavailable", message: "No model could answer"},
		{name: "every model at capacity",
			act:    map[string]http.HandlerFunc{"a/down": busy, "b/ok": busy},
			cfgKey: testKey, auth: "Bearer undefined", upAuth: "Bearer " + testKey,
			status: 429, code: "rate_limit_exceeded", message: "rate-limiting or at capacity"},
		{name: "no key anywhere",
			cfgKey: "", auth: "Bearer undefined",
			status: 401, code: "missing_api_key", message: "No Chutes API key"},
	}
	for _, sc := range scenarios {
		for _, asMessages := range []bool{false, true} {
			for _, stream := range []bool{false, true} {
				name := fmt.Sprintf("%s/errors_as_messages=%v/stream=%v", sc.name, asMessages, stream)
				t.Run(name, func(t *testing.T) {
					f := newFake(t, "a/down", "b/ok")
					for m, h := range sc.act {
						f.set(m, h)
					}
					base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
						c.Upstream.APIKey = config.Secret(sc.cfgKey)
						c.Compat.ErrorsAsMessages = asMessages
						c.Models = []config.Model{{ID: "a/down", Aliases: []string{"auto"}, Fallbacks: []string{"b/ok"}}}
					}))
					body := stBody("auto", stream)
					resp, got := stSend(t, http.MethodPost, base+"/v1/chat/completions", sc.auth, body)

					// What Chutes received: the same bytes, model aside.
					reqs := f.requests()
					if sc.upAuth == "" && len(reqs) > 0 {
						t.Fatalf("Chutes was asked %d times", len(reqs))
					}
					for _, r := range reqs {
						if want := withModel(t, body, "auto", r.Model); !bytes.Equal(r.Body, want) {
							t.Errorf("Chutes received for %s:\n%s\nwant\n%s", r.Model, r.Body, want)
						}
						if r.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != sc.upAuth ||
							r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Accept-Encoding") != "identity" ||
							r.Header.Get("Connection") != "" || r.Header.Get("User-Agent") != "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)" {
							t.Errorf("Chutes received %s with headers %v", r.Path, r.Header)
						}
					}
					if sc.upAuth != "" && len(reqs) != 2 {
						t.Errorf("Chutes was asked %d times, want 2 (a/down, then b/ok)", len(reqs))
					}

					shown, toast := stShows(t, stream, resp.StatusCode, got)
					switch {
					case sc.served != "":
						want := []byte(chatJSON("b/ok", reply))
						if stream {
							want = []byte(sseBody(chatChunks("b/ok", pieces...)...))
						}
						if resp.StatusCode != 200 || !bytes.Equal(got, want) {
							t.Errorf("SillyTavern got %d:\n%s\nwant the upstream's bytes:\n%s", resp.StatusCode, got, want)
						}
						if resp.Header.Get("X-Chutes-Proxy-Model") != sc.served || resp.Header.Get("X-Chutes-Proxy-Attempts") != "2" {
							t.Errorf("served by %q after %q attempts", resp.Header.Get("X-Chutes-Proxy-Model"), resp.Header.Get("X-Chutes-Proxy-Attempts"))
						}
						if shown != reply || toast != "" {
							t.Errorf("SillyTavern shows %q, toast %q", shown, toast)
						}
					case asMessages:
						// The diagnosis is the assistant's reply: status 200, so
						// SillyTavern neither retries a 429 nor drops the text.
						if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Error") != sc.code {
							t.Errorf("got %d, X-Chutes-Proxy-Error %q: %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Error"), got)
						}
						if ct := resp.Header.Get("Content-Type"); stream != strings.HasPrefix(ct, "text/event-stream") {
							t.Errorf("Content-Type %q for stream=%v", ct, stream)
						}
						if stream && !strings.HasSuffix(string(got), "data: [DONE]\n\n") {
							t.Errorf("stream does not end with [DONE]: %q", got)
						}
						if !strings.HasPrefix(shown, "⚠️ chutes-proxy: ") || !strings.Contains(shown, sc.message) || toast != "" {
							t.Errorf("SillyTavern shows %q, toast %q", shown, toast)
						}
					default:
						// An OpenAI error, JSON even for a stream request: that
						// is the only shape SillyTavern turns into a toast.
						e := parseError(t, got)
						if resp.StatusCode != sc.status || e.Error.Code != sc.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
							t.Errorf("got %d %q (%s), want %d %q", resp.StatusCode, e.Error.Code, resp.Header.Get("Content-Type"), sc.status, sc.code)
						}
						if sc.status == 429 && resp.Header.Get("Retry-After") == "" {
							t.Error("429 without Retry-After")
						}
						if shown != "" || toast != e.Error.Message || !strings.Contains(toast, sc.message) {
							t.Errorf("SillyTavern shows %q, toast %q", shown, toast)
						}
					}
				})
			}
		}
	}
}

// TestSillyTavernStreamCut: a Chutes stream that breaks after the reply has
// begun cannot fail over; SillyTavern drops Chutes' bare error line
// silently, so the proxy turns it into a data event with error.message,
// which SillyTavern shows as a toast next to the partial reply.
func TestSillyTavernStreamCut(t *testing.T) {
	for _, asMessages := range []bool{false, true} {
		t.Run(fmt.Sprintf("errors_as_messages=%v", asMessages), func(t *testing.T) {
			f := newFake(t, "a/cut")
			f.set("a/cut", func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for _, e := range chatChunks("a/cut", "Once upon ", "a time")[:3] {
					_, _ = io.WriteString(w, "data: "+e+"\n\n")
				}
				_ = http.NewResponseController(w).Flush()
				_, _ = io.WriteString(w, `{"error":"Unhandled exception during response stream: CUDA out of memory"}`+"\n")
			})
			base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.ErrorsAsMessages = asMessages }))
			resp, got, err := stDo(t, http.MethodPost, base+"/v1/chat/completions", "Bearer ", stBody("a/cut", true))
			if err == nil {
				t.Error("the connection was not cut: the client could take a cut reply for a whole one")
			}
			shown, toast := stShows(t, true, resp.StatusCode, got)
			if shown != "Once upon a time" || !strings.Contains(toast, "cut off") || !strings.Contains(toast, "CUDA out of memory") {
				t.Errorf("SillyTavern shows %q, toast %q; stream:\n%s", shown, toast, got)
			}
		})
	}
}
