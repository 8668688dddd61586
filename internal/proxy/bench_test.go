package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// benchUpstream answers a small chat completion, or an SSE stream of 20
// events when the body asks for a stream.
func benchUpstream() *httptest.Server {
	reply := []byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"finish_reason":"stop"}]}`)
	event := []byte("data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n")
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			rc := http.NewResponseController(w)
			for range 20 {
				w.Write(event)
				rc.Flush()
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(reply)
	}))
}

const benchBody = `{"model":"deepseek-ai/DeepSeek-R1","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Hello"}],"temperature":0.7,"max_tokens":256}`

func benchPost(b *testing.B, client *http.Client, url, body string) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkForward compares a plain chat request sent to the upstream
// directly with the same request through the proxy; the difference is
// what the proxy costs (both include the client and the fake upstream).
func BenchmarkForward(b *testing.B) {
	for _, mode := range []struct {
		name, body string
	}{{"plain", benchBody}, {"stream20", strings.Replace(benchBody, `"max_tokens":256`, `"max_tokens":256,"stream":true`, 1)}} {
		up := benchUpstream()
		cfg := testConfig(b, up.URL, nil)
		ts, _, _ := startProxy(b, cfg)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.Run(mode.name+"/direct", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				benchPost(b, client, up.URL+"/v1/chat/completions", mode.body)
			}
		})
		b.Run(mode.name+"/proxied", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				benchPost(b, client, ts.URL+"/v1/chat/completions", mode.body)
			}
		})
		client.CloseIdleConnections()
		up.Close()
	}
}
