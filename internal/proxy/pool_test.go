package proxy

import (
	"bufio"
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
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
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
			io.WriteString(w, "data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n")
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
// Chutes' front does), chats go over HTTP/2 on one TLS connection, plain
// and streamed alike, and the stream's events arrive unchanged.
func TestHTTPSUpstream(t *testing.T) {
	var conns atomic.Int32
	var protos sync.Map
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protos.Store(r.Proto, true)
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"stream":true`) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: {\"id\":\"%d\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n", i)
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
	srv.state.Load().transport.TLSClientConfig = &tls.Config{RootCAs: roots}

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
				want = "data: {\"id\":\"0\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"id\":\"2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"
			}
			if string(got) != want {
				t.Fatalf("stream=%t: body\n%q\nwant\n%q", stream, got, want)
			}
		}
	}
	var seen []string
	protos.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
	if len(seen) != 1 || seen[0] != "HTTP/2.0" {
		t.Errorf("upstream saw protocols %v, want only HTTP/2.0", seen)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("6 sequential chats opened %d TLS connections, want 1", n)
	}
}

// rawUpstream is an HTTP/1.1 upstream written by hand, for answers a
// net/http server would not give: it counts accepted connections and hands
// each one to serve.
func rawUpstream(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (url string, accepts *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepts = new(atomic.Int32)
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return "http://" + ln.Addr().String(), accepts
}

// readRequest reads one request, head and body, and returns its headers.
func readRequest(br *bufio.Reader) (http.Header, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, req.Body)
	return req.Header, err
}

// TestWrittenRequestNotResent: a chat that reached the upstream whole on a
// kept-alive connection, which the upstream then closed without an answer,
// is never sent again on a new connection (Chutes would count it twice
// against the daily quota), even when the client marked it idempotent.
func TestWrittenRequestNotResent(t *testing.T) {
	var requests atomic.Int32
	var idem atomic.Bool
	url, accepts := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		for {
			h, err := readRequest(br)
			if err != nil {
				return
			}
			if h.Get("Idempotency-Key") != "" || h.Get("X-Idempotency-Key") != "" {
				idem.Store(true)
			}
			if requests.Add(1) > 1 {
				return // read whole, then closed with no answer
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n"+
				`{"id":"1","object":"chat.completion","choices":[]}`[:46])
		}
	})
	ts, _, _ := startProxy(t, testConfig(t, url, nil))
	post := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
		req.Header.Set("Idempotency-Key", "k1")
		req.Header.Set("X-Idempotency-Key", "k1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != http.StatusOK {
		t.Fatalf("first chat: status %d", resp.StatusCode)
	}
	if resp := post(); resp.StatusCode == http.StatusOK {
		t.Fatal("the dropped chat succeeded")
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("the upstream read %d requests, want 2: the dropped one was sent again", n)
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("the upstream accepted %d connections, want 1", n)
	}
	if idem.Load() {
		t.Error("an idempotency header reached the upstream")
	}
}

// TestEarlyAnswer: an upstream that answers before it has read the whole
// body (413 for a body too large) and then reads no more gets its answer to
// the client at once, as upstream_rejected, not a hang while the proxy
// still tries to write the body.
func TestEarlyAnswer(t *testing.T) {
	release := make(chan struct{})
	url, _ := rawUpstream(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil { // the head only
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"detail\":\"too big\"}")
		select { // hold the connection open, reading nothing
		case <-release:
		case <-time.After(30 * time.Second):
		}
	})
	t.Cleanup(func() { close(release) }) // runs before rawUpstream's wait
	ts, _, _ := startProxy(t, testConfig(t, url, func(c *config.Config) {
		c.Upstream.RequestTimeout = config.Duration(time.Minute)
	}))
	body := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 8<<20) + `"}]}`
	start := time.Now()
	resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "too big") {
		t.Fatalf("status %d, body %s; want 413 with the upstream's words", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the early answer took %v", d)
	}
}
