package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

// TestHTTPSUpstream: against an HTTPS upstream that offers HTTP/2 (as
// Chutes' front does), chats go over HTTP/1.1 on a kept-alive TLS
// connection, plain and streamed alike, and the stream's events arrive
// unchanged.
func TestHTTPSUpstream(t *testing.T) {
	var conns atomic.Int32
	var protos sync.Map
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.Proto, true)
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: {\"id\":\"%d\",\"choices\":[]}\n\n", i)
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, "data: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"1","object":"chat.completion","choices":[]}`)
	}))
	up.EnableHTTP2 = true
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	defer up.Close()
	ts, srv, _ := startProxy(t, testConfig(t, up.URL, nil))
	roots := x509.NewCertPool()
	roots.AddCert(up.Certificate())
	srv.state.Load().upstream.TLSConfig = &tls.Config{RootCAs: roots}

	for i := 0; i < 3; i++ {
		for _, stream := range []bool{false, true} {
			body := fmt.Sprintf(`{"model":"m","stream":%t,"messages":[]}`, stream)
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("stream=%t: status %d, %v: %s", stream, resp.StatusCode, err, got)
			}
			want := `{"id":"1","object":"chat.completion","choices":[]}`
			if stream {
				want = "data: {\"id\":\"0\",\"choices\":[]}\n\ndata: {\"id\":\"1\",\"choices\":[]}\n\ndata: {\"id\":\"2\",\"choices\":[]}\n\ndata: [DONE]\n\n"
			}
			if string(got) != want {
				t.Fatalf("stream=%t: body\n%q\nwant\n%q", stream, got, want)
			}
		}
	}
	var seen []string
	protos.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
	if len(seen) != 1 || seen[0] != "HTTP/1.1" {
		t.Errorf("upstream saw protocols %v, want only HTTP/1.1", seen)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("6 sequential chats opened %d TLS connections, want 1", n)
	}
}
