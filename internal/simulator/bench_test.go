package simulator

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func startBench(t *testing.T) (*Bench, *httptest.Server) {
	t.Helper()
	b := NewBench(Scenario{AcceptAnyKey: true, Models: []ModelScenario{{ID: "b/down", Behavior: Behavior{Kind: KindDown}}}},
		[]string{"b/fast"}, []string{"b/reset"})
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	t.Cleanup(b.Close)
	return b, srv
}

func benchPost(t *testing.T, url, body string) (*http.Response, error) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err == nil {
		t.Cleanup(func() { resp.Body.Close() })
	}
	return resp, err
}

func TestBenchAnswers(t *testing.T) {
	b, srv := startBench(t)
	chat := srv.URL + "/v1/chat/completions"
	tests := []struct {
		name, model string
		status      int
		wantBody    string
	}{
		{"fast", "b/fast", http.StatusOK, `"object":"chat.completion"`},
		{"scripted down", "b/down", http.StatusServiceUnavailable, "No instances available"},
		{"unknown", "b/other", http.StatusNotFound, "model not found: b/other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := benchPost(t, chat, `{"model":"`+tt.model+`","messages":[]}`)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.wantBody) {
				t.Fatalf("%d %s; want %d with %q", resp.StatusCode, body, tt.status, tt.wantBody)
			}
			if !json.Valid(body) {
				t.Errorf("not JSON: %s", body)
			}
			if got := b.Requests(tt.model); got != 1 {
				t.Errorf("Requests(%s) = %d, want 1", tt.model, got)
			}
		})
	}
}

func TestBenchReset(t *testing.T) {
	b, srv := startBench(t)
	if resp, err := benchPost(t, srv.URL+"/v1/chat/completions", `{"model":"b/reset"}`); err == nil {
		t.Fatalf("status %d; want the connection reset", resp.StatusCode)
	}
	if got := b.Requests("b/reset"); got != 1 {
		t.Errorf("Requests = %d, want 1", got)
	}
}

// TestBenchStream checks the shape, the count and the stamps of fast
// streams: paced, and all at once with a usage chunk as a proxy that
// streams a plain request upstream asks for it.
func TestBenchStream(t *testing.T) {
	_, srv := startBench(t)
	tests := []struct {
		name, query, body string
		events            int
		usage             bool
	}{
		{"paced", "?events=3&gap=1ms", `{"model":"b/fast","stream":true}`, 3, false},
		{"at once with usage", "", `{"model":"b/fast","stream":true,"stream_options":{"include_usage":true}}`, 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().UnixNano()
			resp, err := benchPost(t, srv.URL+"/v1/chat/completions"+tt.query, tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q", ct)
			}
			var events []string
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
					events = append(events, data)
				}
			}
			want := tt.events + 1
			if tt.usage {
				want++
			}
			if len(events) != want || events[want-1] != "[DONE]" {
				t.Fatalf("%d events %q; want %d and [DONE]", len(events), events, want)
			}
			last := before
			for i, e := range events[:want-1] {
				var v struct {
					T       int64  `json:"t"`
					Model   string `json:"model"`
					Choices []struct {
						FinishReason *string `json:"finish_reason"`
					} `json:"choices"`
					Usage *struct {
						CompletionTokens int `json:"completion_tokens"`
					} `json:"usage"`
				}
				if err := json.Unmarshal([]byte(e), &v); err != nil || v.Model != "b/fast" {
					t.Fatalf("event %s (%v); want JSON for model b/fast", e, err)
				}
				if i == tt.events {
					if v.Usage == nil || v.Usage.CompletionTokens != tt.events || len(v.Choices) != 0 {
						t.Errorf("usage chunk %s", e)
					}
					continue
				}
				if v.T < last || v.T > time.Now().UnixNano() {
					t.Errorf("event %s: stamp not after %d", e, last)
				}
				last = v.T
				if stop := len(v.Choices) == 1 && v.Choices[0].FinishReason != nil && *v.Choices[0].FinishReason == "stop"; stop != (i == tt.events-1) {
					t.Errorf("event %d of %d: finish_reason stop = %v", i+1, tt.events, stop)
				}
			}
		})
	}
}

// BenchmarkBenchChat is why Bench exists: one 1 KB plain chat request
// answered by the Simulator and by the fast path.
func BenchmarkBenchChat(b *testing.B) {
	pad := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 20)
	body := `{"model":"M","messages":[{"role":"user","content":"` + pad + `"}],"max_tokens":256}`
	for _, fast := range []bool{false, true} {
		b.Run("fast="+strconv.FormatBool(fast), func(b *testing.B) {
			var fastModels []string
			if fast {
				fastModels = []string{"M"}
			}
			h := NewBench(Scenario{AcceptAnyKey: true, Models: []ModelScenario{{ID: "M"}}}, fastModels, nil)
			defer h.Close()
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body)))
				if w.Code != http.StatusOK {
					b.Fatal(w.Code, w.Body)
				}
			}
		})
	}
}
