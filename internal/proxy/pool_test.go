package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUpstreamConnectionsReused: every kind of answer that is read to its
// end leaves its upstream connection warm for the next request, so a run of
// sequential requests costs one TCP connection, not one each.
func TestUpstreamConnectionsReused(t *testing.T) {
	var conns atomic.Int32
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(b), `"stream":true`):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"id\":\"1\",\"choices\":[]}\n\n")
			w.(http.Flusher).Flush()
			io.WriteString(w, "data: [DONE]\n\n")
		case strings.Contains(string(b), `"model":"missing"`):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"detail":"bad request"}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"1","object":"chat.completion","choices":[]}`)
		}
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	ts, _, _ := startProxy(t, testConfig(t, up.URL, nil))

	bodies := []struct {
		name, body string
		status     int
	}{
		{"plain", `{"model":"m","messages":[]}`, http.StatusOK},
		{"stream", `{"model":"m","stream":true,"messages":[]}`, http.StatusOK},
		{"error", `{"model":"missing","messages":[]}`, http.StatusBadRequest},
	}
	for i := 0; i < 5; i++ {
		for _, b := range bodies {
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(b.body))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != b.status {
				t.Fatalf("%s: status %d, want %d", b.name, resp.StatusCode, b.status)
			}
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("15 sequential requests opened %d upstream connections, want 1", n)
	}
}
