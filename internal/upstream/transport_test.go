package upstream_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/upstream"
)

// testTimeout bounds every wait that a correct Transport ends at once: a
// failure shows as a slow test, never as a hung one.
const testTimeout = 2 * time.Second

// server is an httptest server that counts the connections it accepts and
// reports each one it sees close.
type server struct {
	*httptest.Server
	news   atomic.Int32
	closed chan struct{} // one value per connection closed
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	return startServer(t, h, nil)
}

// startServer starts the server over TLS, HTTP/2 enabled, when tlsCfg is
// not nil.
func startServer(t *testing.T, h http.Handler, tlsCfg *tls.Config) *server {
	t.Helper()
	s := &server{closed: make(chan struct{}, 1024)}
	s.Server = httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			s.news.Add(1)
		case http.StateClosed, http.StateHijacked:
			select {
			case s.closed <- struct{}{}:
			default:
			}
		}
	}
	if tlsCfg != nil {
		// Handshakes the tests make fail are logged otherwise.
		s.Config.ErrorLog = log.New(io.Discard, "", 0)
		s.TLS = tlsCfg
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// waitClosed waits for the server to see n connections close.
func waitClosed(t *testing.T, closed <-chan struct{}, n int) {
	t.Helper()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	for range n {
		select {
		case <-closed:
		case <-timer.C:
			t.Fatalf("the server did not see a connection close within %v", testTimeout)
		}
	}
}

// rawServer is a TCP listener whose connections the test answers by hand,
// for the framings and failures an http.Server does not produce. Each
// connection is closed when its handler returns.
type rawServer struct {
	ln      net.Listener
	accepts atomic.Int32
	closed  chan struct{} // one value per connection the server closed
	done    chan struct{} // closed when the test ends: handlers must return

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func newRawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, closed: make(chan struct{}, 1024), done: make(chan struct{}),
		conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			s.mu.Lock()
			select {
			case <-s.done:
				s.mu.Unlock()
				c.Close()
				continue
			default:
			}
			s.conns[c] = struct{}{}
			s.wg.Add(1)
			s.mu.Unlock()
			go func() {
				defer s.wg.Done()
				handle(c, bufio.NewReader(c))
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				select {
				case s.closed <- struct{}{}:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		close(s.done)
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *rawServer) URL() string { return "http://" + s.ln.Addr().String() }

// readRequest reads one request and its whole body.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(req.Body)
	return req, b, err
}

// answer returns a handler that answers each request on a connection with
// resp, and closes the connection after the first if once.
func answer(resp string, once bool) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil || once {
				return
			}
		}
	}
}

// newTransport returns tr, whose pool is emptied when the test ends.
func newTransport(t *testing.T, tr *upstream.Transport) *upstream.Transport {
	t.Helper()
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func newRequest(t *testing.T, method, u string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and reads its response body to the end.
func do(t *testing.T, rt http.RoundTripper, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func get(t *testing.T, rt http.RoundTripper, u string) string {
	t.Helper()
	resp, body := do(t, rt, newRequest(t, http.MethodGet, u, nil))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200", u, resp.StatusCode)
	}
	return body
}

func ok(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }

// seen is what the server got of a request.
type seen struct {
	method, uri, host, proto string
	header                   http.Header
	contentLength            int64
	transferEncoding         []string
	body                     string
}

func TestRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	tests := []struct {
		name     string
		method   string
		path     string
		body     func() io.Reader
		header   http.Header
		host     string
		wantURI  string
		wantHost string // "" means the server's address
		wantUA   string
		wantHdr  http.Header // a subset of what the server must see
		wantBody string
	}{
		{
			name:    "GET with a query",
			method:  http.MethodGet,
			path:    "/v1/models?x=1&y=a%20b",
			header:  http.Header{"X-Trace": {"t1"}},
			wantURI: "/v1/models?x=1&y=a%20b",
			wantUA:  "Go-http-client/1.1",
			wantHdr: http.Header{"X-Trace": {"t1"}},
		},
		{
			name:     "POST with a bytes.Reader body",
			method:   http.MethodPost,
			path:     "/v1/chat/completions",
			body:     func() io.Reader { return bytes.NewReader([]byte(`{"model":"m","stream":true}`)) },
			header:   http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer cpk_x"}},
			wantURI:  "/v1/chat/completions",
			wantUA:   "Go-http-client/1.1",
			wantHdr:  http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer cpk_x"}},
			wantBody: `{"model":"m","stream":true}`,
		},
		{
			name:     "PUT with a strings.Reader body",
			method:   http.MethodPut,
			path:     "/x",
			body:     func() io.Reader { return strings.NewReader("put body") },
			wantURI:  "/x",
			wantUA:   "Go-http-client/1.1",
			wantBody: "put body",
		},
		{
			name:     "POST with a 1 MiB body",
			method:   http.MethodPost,
			path:     "/big",
			body:     func() io.Reader { return bytes.NewReader(big) },
			wantURI:  "/big",
			wantUA:   "Go-http-client/1.1",
			wantBody: string(big),
		},
		{
			name:    "POST without a body",
			method:  http.MethodPost,
			path:    "/empty",
			wantURI: "/empty",
			wantUA:  "Go-http-client/1.1",
			wantHdr: http.Header{"Content-Length": {"0"}},
		},
		{
			name:    "the caller's User-Agent is kept",
			method:  http.MethodGet,
			path:    "/",
			header:  http.Header{"User-Agent": {"chutes-proxy/1.0"}},
			wantURI: "/",
			wantUA:  "chutes-proxy/1.0",
		},
		{
			name:    "an empty User-Agent is not replaced",
			method:  http.MethodGet,
			path:    "/",
			header:  http.Header{"User-Agent": {""}},
			wantURI: "/",
			wantUA:  "",
		},
		{
			name:     "Host set on the request",
			method:   http.MethodGet,
			path:     "/",
			host:     "api.example.test",
			wantURI:  "/",
			wantHost: "api.example.test",
			wantUA:   "Go-http-client/1.1",
		},
		{
			name:    "a header with several values",
			method:  http.MethodGet,
			path:    "/",
			header:  http.Header{"X-Multi": {"a", "b"}},
			wantURI: "/",
			wantUA:  "Go-http-client/1.1",
			wantHdr: http.Header{"X-Multi": {"a", "b"}},
		},
		{
			name:   "framing headers in Header are not sent verbatim",
			method: http.MethodPost,
			path:   "/",
			body:   func() io.Reader { return strings.NewReader("12345") },
			header: http.Header{"Content-Length": {"999"}, "Transfer-Encoding": {"chunked"},
				"Host": {"wrong.test"}, "Trailer": {"X-T"}},
			wantURI:  "/",
			wantUA:   "Go-http-client/1.1",
			wantHdr:  http.Header{"Content-Length": {"5"}},
			wantBody: "12345",
		},
		{
			name:    "an escaped path",
			method:  http.MethodGet,
			path:    "/a%2Fb/c%20d?q=%C3%A9",
			wantURI: "/a%2Fb/c%20d?q=%C3%A9",
			wantUA:  "Go-http-client/1.1",
		},
	}
	got := make(chan seen, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server: reading the body: %v", err)
		}
		got <- seen{method: r.Method, uri: r.RequestURI, host: r.Host, proto: r.Proto, header: r.Header.Clone(),
			contentLength: r.ContentLength, transferEncoding: r.TransferEncoding, body: string(b)}
		w.Header().Set("X-Reply", "yes")
		w.Header().Add("X-Values", "1")
		w.Header().Add("X-Values", "2")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %d", r.Method, len(b))
	})
	tr := newTransport(t, &upstream.Transport{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != nil {
				body = tt.body()
			}
			req := newRequest(t, tt.method, srv.URL+tt.path, body)
			for k, vv := range tt.header {
				req.Header[k] = vv
			}
			req.Host = tt.host
			resp, respBody := do(t, tr, req)

			if resp.StatusCode != http.StatusCreated {
				t.Errorf("status %d, want 201", resp.StatusCode)
			}
			if resp.Proto != "HTTP/1.1" {
				t.Errorf("response proto %q, want HTTP/1.1", resp.Proto)
			}
			if h := resp.Header.Get("X-Reply"); h != "yes" {
				t.Errorf("X-Reply %q, want yes", h)
			}
			if vv := resp.Header["X-Values"]; len(vv) != 2 || vv[0] != "1" || vv[1] != "2" {
				t.Errorf("X-Values %q, want [1 2]", vv)
			}
			if want := fmt.Sprintf("%s %d", tt.method, len(tt.wantBody)); respBody != want {
				t.Errorf("response body %q, want %q", respBody, want)
			}
			if resp.Request != req {
				t.Error("resp.Request is not the request sent")
			}

			s := <-got
			if s.method != tt.method {
				t.Errorf("server saw method %q, want %q", s.method, tt.method)
			}
			if s.uri != tt.wantURI {
				t.Errorf("server saw request URI %q, want %q", s.uri, tt.wantURI)
			}
			wantHost := tt.wantHost
			if wantHost == "" {
				wantHost = srv.Listener.Addr().String()
			}
			if s.host != wantHost {
				t.Errorf("server saw Host %q, want %q", s.host, wantHost)
			}
			if s.proto != "HTTP/1.1" {
				t.Errorf("server saw proto %q, want HTTP/1.1", s.proto)
			}
			if ua := s.header.Get("User-Agent"); ua != tt.wantUA {
				t.Errorf("server saw User-Agent %q, want %q", ua, tt.wantUA)
			}
			if n := len(s.header["User-Agent"]); n > 1 {
				t.Errorf("server saw %d User-Agent headers", n)
			}
			for k, want := range tt.wantHdr {
				if got := s.header[k]; strings.Join(got, "|") != strings.Join(want, "|") {
					t.Errorf("server saw %s %q, want %q", k, got, want)
				}
			}
			if s.contentLength != int64(len(tt.wantBody)) {
				t.Errorf("server saw Content-Length %d, want %d", s.contentLength, len(tt.wantBody))
			}
			if len(s.transferEncoding) != 0 {
				t.Errorf("server saw Transfer-Encoding %q, want none", s.transferEncoding)
			}
			if s.body != tt.wantBody {
				t.Errorf("server saw a body of %d bytes, want %d", len(s.body), len(tt.wantBody))
			}
		})
	}
}

func TestKeepAlive(t *testing.T) {
	const n = 4
	const size = 64 << 10
	sized := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", "11")
		io.WriteString(w, "hello world")
	}
	big := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(bytes.Repeat([]byte("x"), size))
	}
	chunked := func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello ")
		w.(http.Flusher).Flush()
		io.WriteString(w, "world")
	}
	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
	}
	readAll := func(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
	readExactly := func(n int) func(io.Reader) error {
		return func(r io.Reader) error {
			_, err := io.ReadFull(r, make([]byte, n))
			return err
		}
	}
	readNothing := func(io.Reader) error { return nil }

	tests := []struct {
		name      string
		handler   http.HandlerFunc
		method    string
		reqClose  bool
		consume   func(io.Reader) error
		wantConns int32
	}{
		{"sized body read to EOF", sized, http.MethodGet, false, readAll, 1},
		{"sized body read exactly, EOF never seen", sized, http.MethodGet, false, readExactly(11), 1},
		{"large sized body read to EOF", big, http.MethodGet, false, readAll, 1},
		{"large sized body read exactly", big, http.MethodGet, false, readExactly(size), 1},
		{"chunked body read to EOF", chunked, http.MethodGet, false, readAll, 1},
		{"POST answered with a sized body", sized, http.MethodPost, false, readAll, 1},
		{"HEAD", sized, http.MethodHead, false, readNothing, 1},
		{"204 No Content", status(http.StatusNoContent), http.MethodGet, false, readNothing, 1},
		{"304 Not Modified", status(http.StatusNotModified), http.MethodGet, false, readNothing, 1},
		{"200 with an empty body", status(http.StatusOK), http.MethodGet, false, readNothing, 1},
		{"sized body closed unread", sized, http.MethodGet, false, readNothing, n},
		{"large body closed after one byte", big, http.MethodGet, false, readExactly(1), n},
		{"chunked body closed before its end", chunked, http.MethodGet, false, readExactly(3), n},
		{"Connection: close in the response", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			sized(w, r)
		}, http.MethodGet, false, readAll, n},
		{"Close set on the request", sized, http.MethodGet, true, readAll, n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.handler)
			tr := newTransport(t, &upstream.Transport{})
			for i := range n {
				req := newRequest(t, tt.method, srv.URL, nil)
				req.Close = tt.reqClose
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if err := tt.consume(resp.Body); err != nil {
					t.Fatalf("request %d: reading the body: %v", i, err)
				}
				if err := resp.Body.Close(); err != nil {
					t.Fatalf("request %d: closing the body: %v", i, err)
				}
			}
			if got := srv.news.Load(); got != tt.wantConns {
				t.Errorf("%d requests used %d connections, want %d", n, got, tt.wantConns)
			}
		})
	}
}

func TestResponseFramings(t *testing.T) {
	tests := []struct {
		name        string
		resp        string
		once        bool // the server closes the connection after answering
		wantBody    string
		wantTrailer http.Header
		wantClose   bool
		wantConns   int32 // for two requests
	}{
		{
			name:      "Content-Length",
			resp:      "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world",
			wantBody:  "hello world",
			wantConns: 1,
		},
		{
			name:      "Content-Length 0",
			resp:      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
			wantConns: 1,
		},
		{
			name: "chunked with trailers",
			resp: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
			wantBody:    "hello world",
			wantTrailer: http.Header{"X-Checksum": {"abc"}},
			wantConns:   1,
		},
		{
			name:      "chunked and empty",
			resp:      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
			wantConns: 1,
		},
		{
			name:      "HTTP/1.0 delimited by close",
			resp:      "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world",
			once:      true,
			wantBody:  "hello world",
			wantClose: true,
			wantConns: 2,
		},
		{
			name:      "HTTP/1.1 without a length, delimited by close",
			resp:      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: 1\n\ndata: 2\n\n",
			once:      true,
			wantBody:  "data: 1\n\ndata: 2\n\n",
			wantClose: true,
			wantConns: 2,
		},
		{
			name:      "HTTP/1.0 keep-alive with a length",
			resp:      "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\nhello",
			wantBody:  "hello",
			wantConns: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, answer(tt.resp, tt.once))
			tr := newTransport(t, &upstream.Transport{})
			for i := range 2 {
				resp, body := do(t, tr, newRequest(t, http.MethodGet, srv.URL(), nil))
				if resp.StatusCode != http.StatusOK {
					t.Errorf("request %d: status %d, want 200", i, resp.StatusCode)
				}
				if body != tt.wantBody {
					t.Errorf("request %d: body %q, want %q", i, body, tt.wantBody)
				}
				if resp.Close != tt.wantClose {
					t.Errorf("request %d: resp.Close %v, want %v", i, resp.Close, tt.wantClose)
				}
				for k, want := range tt.wantTrailer {
					if got := resp.Trailer.Get(k); got != want[0] {
						t.Errorf("request %d: trailer %s %q, want %q", i, k, got, want[0])
					}
				}
			}
			if got := srv.accepts.Load(); got != tt.wantConns {
				t.Errorf("2 requests used %d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

// staleServer answers each connection's one request with "ok", then closes
// it (with a reset if rst) once the test sends on closeNow; got receives
// each body the server read.
func staleServer(t *testing.T, rst bool, closeNow <-chan struct{}, got chan<- string) *rawServer {
	var s *rawServer
	s = newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		_, body, err := readRequest(br)
		if err != nil {
			return
		}
		got <- string(body)
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
		select {
		case <-closeNow:
		case <-s.done:
			return
		}
		if rst {
			c.(*net.TCPConn).SetLinger(0)
		}
	})
	return s
}

func TestStaleConnection(t *testing.T) {
	body := strings.Repeat("payload-", 2048) // 16 KiB: more than one write
	tests := []struct {
		name      string
		rst       bool // the server resets the idle connection rather than closing it
		method    string
		body      string
		noGetBody bool
		wantErr   bool
	}{
		{name: "POST after close", method: http.MethodPost, body: body},
		{name: "POST after reset", rst: true, method: http.MethodPost, body: body},
		{name: "GET after close", method: http.MethodGet},
		{name: "GET after reset", rst: true, method: http.MethodGet},
		// Where pooled connections are checked before reuse, the stale one
		// never carries the request, so no GetBody is needed; elsewhere a
		// body that cannot be replayed fails.
		{name: "POST without GetBody", method: http.MethodPost, body: body, noGetBody: true, wantErr: !upstream.ChecksAlive},
		{name: "POST without GetBody after reset", rst: true, method: http.MethodPost, body: body, noGetBody: true, wantErr: !upstream.ChecksAlive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			closeNow := make(chan struct{}, 2)
			got := make(chan string, 4)
			srv := staleServer(t, tt.rst, closeNow, got)
			tr := newTransport(t, &upstream.Transport{})

			if _, b := do(t, tr, newRequest(t, http.MethodPost, srv.URL(), strings.NewReader("first"))); b != "ok" {
				t.Fatalf("first response %q, want ok", b)
			}
			if b := <-got; b != "first" {
				t.Fatalf("server got %q, want first", b)
			}
			// The connection is in the pool: have the server drop it.
			closeNow <- struct{}{}
			waitClosed(t, srv.closed, 1)

			var rd io.Reader
			if tt.body != "" {
				rd = strings.NewReader(tt.body)
			}
			req := newRequest(t, tt.method, srv.URL(), rd)
			if tt.noGetBody {
				req.GetBody = nil
			}
			resp, err := tr.RoundTrip(req)
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatal("a request on a stale connection without GetBody succeeded; want an error")
				}
				if n := srv.accepts.Load(); n != 1 {
					t.Errorf("the server accepted %d connections, want 1 (no retry)", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("request on a stale connection: %v, want a transparent retry", err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "ok" {
				t.Fatalf("retried response %q, %v; want ok", b, err)
			}
			if n := srv.accepts.Load(); n != 2 {
				t.Errorf("the server accepted %d connections, want 2", n)
			}
			if b := <-got; b != tt.body {
				t.Errorf("the new connection got a body of %d bytes, want %d", len(b), len(tt.body))
			}
		})
	}
}

// TestStaleConnections: after a quiet spell every pooled connection may be
// stale, not just one; a request must still not fail because of them.
func TestStaleConnections(t *testing.T) {
	const pooled = 2
	closeNow := make(chan struct{})
	got := make(chan string, 8)
	arrived := make(chan struct{}, 8)
	release := make(chan struct{})
	var s *rawServer
	s = newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		_, body, err := readRequest(br)
		if err != nil {
			return
		}
		got <- string(body)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-s.done:
			return
		}
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
		select {
		case <-closeNow:
		case <-s.done:
		}
	})
	tr := newTransport(t, &upstream.Transport{})

	// Fill the pool with two connections: two requests at once.
	var wg sync.WaitGroup
	for range pooled {
		wg.Go(func() {
			resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, s.URL(), nil))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	for range pooled {
		<-arrived
	}
	close(release)
	wg.Wait()
	close(closeNow)
	waitClosed(t, s.closed, pooled)

	resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, s.URL(), strings.NewReader("again")))
	if err != nil {
		t.Fatalf("with %d stale connections pooled: %v", pooled, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func TestFailureOnFreshConnection(t *testing.T) {
	tests := []struct {
		name    string
		handle  func(net.Conn, *bufio.Reader)
		wantIs  error
		wantMsg string
	}{
		{
			name: "closed without answering",
			handle: func(c net.Conn, br *bufio.Reader) {
				readRequest(br)
			},
			wantIs:  io.EOF,
			wantMsg: "closed the connection without answering",
		},
		{
			name: "reset",
			handle: func(c net.Conn, br *bufio.Reader) {
				readRequest(br)
				c.(*net.TCPConn).SetLinger(0)
			},
			wantIs: syscall.ECONNRESET,
		},
		{
			name: "a head cut off",
			handle: func(c net.Conn, br *bufio.Reader) {
				readRequest(br)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")
			},
			wantIs:  io.ErrUnexpectedEOF,
			wantMsg: "reading the upstream's response",
		},
		{
			name: "not HTTP",
			handle: func(c net.Conn, br *bufio.Reader) {
				readRequest(br)
				io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n\r\n")
			},
			wantMsg: "malformed HTTP",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, tt.handle)
			tr := newTransport(t, &upstream.Transport{})
			resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, srv.URL(), strings.NewReader("x")))
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q is not %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", err, tt.wantMsg)
			}
			if n := srv.accepts.Load(); n != 1 {
				t.Errorf("the server accepted %d connections, want 1 (a fresh connection is not retried)", n)
			}
		})
	}
}

// TestAnsweredFailureNotRetried: a pooled connection that breaks after the
// upstream began to answer is not retried, since the request reached it.
func TestAnsweredFailureNotRetried(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n")
	})
	tr := newTransport(t, &upstream.Transport{})
	get(t, tr, srv.URL())
	resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, srv.URL(), strings.NewReader("x")))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded, want an error")
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %q is not io.ErrUnexpectedEOF", err)
	}
	if n := srv.accepts.Load(); n != 1 {
		t.Errorf("the server accepted %d connections, want 1 (no retry)", n)
	}
}

func TestContextEnds(t *testing.T) {
	tests := []struct {
		name     string
		deadline bool // a deadline rather than a cancel ends the context
		inBody   bool // it ends while the body is read, not the head
		want     error
	}{
		{"cancel while waiting for the head", false, false, context.Canceled},
		{"deadline while waiting for the head", true, false, context.DeadlineExceeded},
		{"cancel while reading the body", false, true, context.Canceled},
		{"deadline while reading the body", true, true, context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/block" {
					io.WriteString(w, "ok")
					return
				}
				if tt.inBody {
					w.Header().Set("Content-Type", "text/event-stream")
					io.WriteString(w, "part1")
					w.(http.Flusher).Flush()
				}
				<-r.Context().Done()
			})
			tr := newTransport(t, &upstream.Transport{})
			get(t, tr, srv.URL+"/ok") // a pooled connection, to be taken by /block

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			trigger := func() { time.AfterFunc(20*time.Millisecond, cancel) }
			if tt.deadline {
				// In the body case the head must arrive first: a margin.
				d := 20 * time.Millisecond
				if tt.inBody {
					d = 500 * time.Millisecond
				}
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
				trigger = func() {}
			}
			req := newRequest(t, http.MethodGet, srv.URL+"/block", nil).WithContext(ctx)
			var resp *http.Response
			var err error
			if tt.inBody {
				resp, err = tr.RoundTrip(req)
				if err != nil {
					t.Fatalf("RoundTrip: %v", err)
				}
				p := make([]byte, 5)
				if _, err := io.ReadFull(resp.Body, p); err != nil || string(p) != "part1" {
					resp.Body.Close()
					t.Fatalf("reading the first part: %q, %v", p, err)
				}
				trigger()
				bounded(t, srv, "a Read", func() { _, err = resp.Body.Read(p) })
				resp.Body.Close()
			} else {
				trigger()
				bounded(t, srv, "RoundTrip", func() { resp, err = tr.RoundTrip(req) })
				if err == nil {
					resp.Body.Close()
					t.Fatal("RoundTrip succeeded, want an error")
				}
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %v is not %v", err, tt.want)
			}
			// The connection is not pooled: the next request dials.
			get(t, tr, srv.URL+"/ok")
			if n := srv.news.Load(); n != 2 {
				t.Errorf("the server saw %d connections, want 2", n)
			}
			waitClosed(t, srv.closed, 1)
		})
	}
}

// bounded runs f, which must return soon after a context ends. If it has
// not within testTimeout, the test fails and srv's connections are broken,
// so that f returns and the test with it.
func bounded(t *testing.T, srv *server, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	timer := time.NewTimer(testTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Errorf("%s did not return within %v after its context ended", what, testTimeout)
		srv.CloseClientConnections()
		<-done
	}
}

func TestContextEndedBefore(t *testing.T) {
	srv := newServer(t, ok)
	tr := newTransport(t, &upstream.Transport{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL, nil).WithContext(ctx))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip with a cancelled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error %v is not context.Canceled", err)
	}
}

// countingConn counts the bytes written to a connection.
type countingConn struct {
	net.Conn
	written *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.written.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// TestContextEndedBeforePooled: a request whose context has ended is not
// sent, even when a pooled connection needs no dial to fail (net/http's
// Transport checks the context first). An upstream that gets it anyway does
// the work, and may bill it, for a client that is gone.
func TestContextEndedBeforePooled(t *testing.T) {
	srv := newServer(t, ok)
	var written atomic.Int64
	var d net.Dialer
	tr := newTransport(t, &upstream.Transport{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{c, &written}, nil
	}})
	for i := range 20 {
		get(t, tr, srv.URL)
		before := written.Load()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, srv.URL, strings.NewReader("x")).WithContext(ctx))
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("try %d: error %v is not context.Canceled", i, err)
		}
		if n := written.Load() - before; n != 0 {
			t.Fatalf("try %d: %d bytes of a cancelled request were written to the upstream", i, n)
		}
	}
}

func TestInformationalResponses(t *testing.T) {
	const final = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	hints := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
	tests := []struct {
		name    string
		resp    string
		wantErr string
	}{
		{name: "100 and 103 before the 200", resp: "HTTP/1.1 100 Continue\r\n\r\n" + hints + final},
		{name: "five 1xx", resp: strings.Repeat(hints, 5) + final},
		{name: "six 1xx", resp: strings.Repeat(hints, 6) + final, wantErr: "too many 1xx"},
		{name: "101 unasked", resp: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
			wantErr: "101"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, answer(tt.resp, false))
			tr := newTransport(t, &upstream.Transport{})
			if tt.wantErr != "" {
				resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL(), nil))
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want an error", resp.StatusCode)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not say %q", err, tt.wantErr)
				}
				return
			}
			for i := range 2 {
				resp, body := do(t, tr, newRequest(t, http.MethodGet, srv.URL(), nil))
				if resp.StatusCode != http.StatusOK || body != "ok" {
					t.Errorf("request %d: %d %q, want 200 ok", i, resp.StatusCode, body)
				}
				if l := resp.Header.Get("Link"); l != "" {
					t.Errorf("request %d: a 1xx header leaked into the response: Link %q", i, l)
				}
			}
			if n := srv.accepts.Load(); n != 1 {
				t.Errorf("2 requests used %d connections, want 1", n)
			}
		})
	}
}

func TestHeaderTooLarge(t *testing.T) {
	const sent = 32 << 20 // what the server offers: 32 times the limit
	line := "X-Pad: " + strings.Repeat("a", 1017) + "\r\n"
	tests := []struct {
		name    string
		head    func(w io.Writer) error
		wantErr bool
	}{
		{"endless headers", func(w io.Writer) error {
			io.WriteString(w, "HTTP/1.1 200 OK\r\n")
			for n := 0; n < sent; n += len(line) {
				if _, err := io.WriteString(w, line); err != nil {
					return err
				}
			}
			return nil
		}, true},
		{"one endless header line", func(w io.Writer) error {
			io.WriteString(w, "HTTP/1.1 200 OK\r\nX-Big: ")
			chunk := strings.Repeat("b", 64<<10)
			for n := 0; n < sent; n += len(chunk) {
				if _, err := io.WriteString(w, chunk); err != nil {
					return err
				}
			}
			return nil
		}, true},
		{"endless status line", func(w io.Writer) error {
			chunk := strings.Repeat("H", 64<<10)
			for n := 0; n < sent; n += len(chunk) {
				if _, err := io.WriteString(w, chunk); err != nil {
					return err
				}
			}
			return nil
		}, true},
		{"headers just under the limit", func(w io.Writer) error {
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
			for range (upstream.MaxHeaderBytes - 1024) / len(line) {
				io.WriteString(w, line)
			}
			_, err := io.WriteString(w, "\r\nok")
			return err
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				w := bufio.NewWriterSize(c, 64<<10)
				if tt.head(w) == nil {
					w.Flush()
				}
			})
			tr := newTransport(t, &upstream.Transport{})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL(), nil))
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("a head under the limit: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "ok" {
					t.Errorf("body %q, want ok", b)
				}
				return
			}
			if err == nil {
				resp.Body.Close()
				t.Fatal("RoundTrip succeeded, want an error")
			}
			if !errors.Is(err, upstream.ErrHeaderTooLarge) {
				t.Errorf("error %q is not upstream.ErrHeaderTooLarge", err)
			}
			if elapsed > testTimeout {
				t.Errorf("it took %v to give up", elapsed)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16*upstream.MaxHeaderBytes {
				t.Errorf("it allocated %d MiB for a head limited to 1 MiB", alloc>>20)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	type got struct{ proto, alpn string }
	seenc := make(chan got, 16)
	// The server prefers HTTP/2: the Transport must still get HTTP/1.1.
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenc <- got{r.Proto, r.TLS.NegotiatedProtocol}
		io.WriteString(w, "ok")
	}), &tls.Config{NextProtos: []string{"h2", "http/1.1"}})

	// A client that offers h2 gets it: the test can tell the two apart.
	c := srv.Client()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if g := <-seenc; g.proto != "HTTP/2.0" {
		t.Fatalf("net/http's client got %s from the server, want HTTP/2.0", g.proto)
	}

	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	tests := []struct {
		name          string
		cfg           *tls.Config
		wantVerifyErr bool
	}{
		{"trusted", &tls.Config{RootCAs: pool}, false},
		{"trusted, with the certificate's name as ServerName", &tls.Config{RootCAs: pool, ServerName: "example.com"}, false},
		{"trusted, with a wrong ServerName", &tls.Config{RootCAs: pool, ServerName: "wrong.test"}, true},
		{"untrusted", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := srv.news.Load()
			tr := newTransport(t, &upstream.Transport{TLSConfig: tt.cfg})
			if tt.wantVerifyErr {
				resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL, nil))
				if err == nil {
					resp.Body.Close()
					t.Fatal("RoundTrip succeeded, want a certificate error")
				}
				var ve *tls.CertificateVerificationError
				if !errors.As(err, &ve) {
					t.Errorf("error %q (%T) is not a *tls.CertificateVerificationError", err, err)
				}
				return
			}
			for i := range 3 {
				if b := get(t, tr, srv.URL); b != "ok" {
					t.Errorf("request %d: body %q, want ok", i, b)
				}
				if g := <-seenc; g.proto != "HTTP/1.1" || g.alpn != "http/1.1" {
					t.Errorf("request %d: the server saw %s, ALPN %q; want HTTP/1.1, http/1.1", i, g.proto, g.alpn)
				}
			}
			if n := srv.news.Load() - base; n != 1 {
				t.Errorf("3 requests used %d TLS connections, want 1", n)
			}
			if tt.cfg.NextProtos != nil {
				t.Errorf("the caller's TLSConfig was changed: NextProtos %q", tt.cfg.NextProtos)
			}
		})
	}
}

func TestHandshakeTimeout(t *testing.T) {
	// A server that accepts and never says a word.
	srv := newRawServer(t, func(c net.Conn, _ *bufio.Reader) { io.Copy(io.Discard, c) })
	tr := newTransport(t, &upstream.Transport{HandshakeTimeout: 50 * time.Millisecond})
	start := time.Now()
	resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, "https://"+srv.ln.Addr().String(), nil))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip succeeded, want a handshake time-out")
	}
	if elapsed := time.Since(start); elapsed > testTimeout {
		t.Errorf("the handshake gave up after %v", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %q is not context.DeadlineExceeded", err)
	}
}

// stubRT is a Fallback that answers 418 and counts its calls.
type stubRT struct{ calls atomic.Int32 }

func (s *stubRT) RoundTrip(req *http.Request) (*http.Response, error) {
	s.calls.Add(1)
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusTeapot, Header: http.Header{}, Body: http.NoBody, Request: req}, nil
}

func TestFallback(t *testing.T) {
	srv := newServer(t, ok)
	proxyURL, _ := url.Parse("http://proxy.test:3128")
	viaProxy := func(*http.Request) (*url.URL, error) { return proxyURL, nil }
	tests := []struct {
		name         string
		proxy        func(*http.Request) (*url.URL, error)
		edit         func(*http.Request)
		wantFallback bool
	}{
		{name: "plain", wantFallback: false},
		{name: "a proxy that declines", proxy: func(*http.Request) (*url.URL, error) { return nil, nil }},
		{name: "an environment proxy applies", proxy: viaProxy, wantFallback: true},
		{name: "the proxy function fails", proxy: func(*http.Request) (*url.URL, error) {
			return nil, errors.New("bad NO_PROXY")
		}, wantFallback: true},
		{name: "a body of unknown length", edit: func(r *http.Request) {
			r.Method = http.MethodPost
			r.Body = io.NopCloser(strings.NewReader("x"))
			r.ContentLength = -1
		}, wantFallback: true},
		{name: "scheme ftp", edit: func(r *http.Request) { r.URL.Scheme = "ftp" }, wantFallback: true},
		{name: "no host", edit: func(r *http.Request) { r.URL.Host = "" }, wantFallback: true},
		{name: "CRLF in a header value", edit: func(r *http.Request) {
			r.Header.Set("X-A", "a\r\nX-Injected: 1")
		}, wantFallback: true},
		{name: "LF in a header value", edit: func(r *http.Request) { r.Header.Set("X-A", "a\nb") }, wantFallback: true},
		{name: "NUL in a header value", edit: func(r *http.Request) { r.Header.Set("X-A", "a\x00b") }, wantFallback: true},
		{name: "a space in a header name", edit: func(r *http.Request) { r.Header["Bad Name"] = []string{"v"} }, wantFallback: true},
		{name: "a colon in a header name", edit: func(r *http.Request) { r.Header["X:Y"] = []string{"v"} }, wantFallback: true},
		{name: "a method that is not a token", edit: func(r *http.Request) { r.Method = "GET /x" }, wantFallback: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := func() *http.Request {
				r := newRequest(t, http.MethodGet, srv.URL, nil)
				if tt.edit != nil {
					tt.edit(r)
				}
				return r
			}
			base := srv.news.Load()
			fb := &stubRT{}
			tr := newTransport(t, &upstream.Transport{Proxy: tt.proxy, Fallback: fb})
			resp, err := tr.RoundTrip(req())
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if tt.wantFallback {
				if fb.calls.Load() != 1 || resp.StatusCode != http.StatusTeapot {
					t.Errorf("Fallback called %d times, status %d; want once, 418", fb.calls.Load(), resp.StatusCode)
				}
				if n := srv.news.Load() - base; n != 0 {
					t.Errorf("the upstream saw %d connections, want none", n)
				}
			} else if fb.calls.Load() != 0 || resp.StatusCode != http.StatusOK {
				t.Errorf("Fallback called %d times, status %d; want none, 200", fb.calls.Load(), resp.StatusCode)
			}
			if !tt.wantFallback {
				return
			}

			tr = newTransport(t, &upstream.Transport{Proxy: tt.proxy})
			resp, err = tr.RoundTrip(req())
			if err == nil {
				resp.Body.Close()
				t.Fatalf("without a Fallback: status %d, want an error", resp.StatusCode)
			}
			if !strings.Contains(err.Error(), "no fallback") {
				t.Errorf("without a Fallback: error %q does not say there is no fallback", err)
			}
			if n := srv.news.Load() - base; n != 0 {
				t.Errorf("the upstream saw %d connections, want none", n)
			}
		})
	}
}

func TestCloseIdleConnections(t *testing.T) {
	(&upstream.Transport{}).CloseIdleConnections() // a Transport never used

	srv := newServer(t, ok)
	tr := newTransport(t, &upstream.Transport{})
	get(t, tr, srv.URL)
	tr.CloseIdleConnections()
	waitClosed(t, srv.closed, 1)
	get(t, tr, srv.URL)
	if n := srv.news.Load(); n != 2 {
		t.Errorf("the server saw %d connections, want 2", n)
	}
	// The pool works as before, and closing twice is harmless.
	get(t, tr, srv.URL)
	if n := srv.news.Load(); n != 2 {
		t.Errorf("the server saw %d connections, want 2", n)
	}
	tr.CloseIdleConnections()
	tr.CloseIdleConnections()
	waitClosed(t, srv.closed, 1)
}

// TestCloseIdleConnectionsInUse: as its doc says, a connection in use when
// CloseIdleConnections is called is closed when its response is done with
// (as net/http's Transport does), not pooled.
func TestCloseIdleConnectionsInUse(t *testing.T) {
	srv := newServer(t, ok)
	tr := newTransport(t, &upstream.Transport{})
	resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	get(t, tr, srv.URL)
	if n := srv.news.Load(); n != 2 {
		t.Errorf("the connection in use was pooled: the server saw %d connections, want 2", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	const idle = 50 * time.Millisecond
	srv := newServer(t, ok)
	tr := newTransport(t, &upstream.Transport{IdleTimeout: idle})
	get(t, tr, srv.URL)
	get(t, tr, srv.URL)
	if n := srv.news.Load(); n != 1 {
		t.Fatalf("two requests in a row used %d connections, want 1", n)
	}
	time.Sleep(3 * idle)
	get(t, tr, srv.URL)
	if n := srv.news.Load(); n != 2 {
		t.Errorf("a request after the idle time-out used %d connections in all, want 2", n)
	}
	// The expired connection was closed, not just forgotten.
	waitClosed(t, srv.closed, 1)
}

func TestMaxIdlePerHost(t *testing.T) {
	const concurrent = 4
	tests := []struct {
		name  string
		limit int
		want  int32 // connections for two rounds of concurrent requests
	}{
		{"limit 2", 2, concurrent + concurrent - 2},
		{"limit 1", 1, concurrent + concurrent - 1},
		{"default", 0, concurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			arrived := make(chan struct{}, 2*concurrent)
			release := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				round := 0
				if r.URL.Query().Get("round") == "1" {
					round = 1
				}
				select {
				case <-release[round]:
					io.WriteString(w, "ok")
				case <-r.Context().Done():
				}
			})
			tr := newTransport(t, &upstream.Transport{MaxIdlePerHost: tt.limit})
			for round := range 2 {
				// All requests of a round are in flight at once, so each
				// holds its own connection.
				var wg sync.WaitGroup
				for range concurrent {
					wg.Go(func() {
						req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, fmt.Sprintf("%s/?round=%d", srv.URL, round), nil)
						resp, err := tr.RoundTrip(req)
						if err != nil {
							t.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					})
				}
				for range concurrent {
					select {
					case <-arrived:
					case <-time.After(testTimeout):
						t.Fatalf("round %d: %d requests did not arrive at once", round, concurrent)
					}
				}
				close(release[round])
				wg.Wait()
			}
			if n := srv.news.Load(); n != tt.want {
				t.Errorf("two rounds of %d requests used %d connections, want %d", concurrent, n, tt.want)
			}
		})
	}
}

func TestConcurrentRequests(t *testing.T) {
	const goroutines, requests = 32, 50
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("server: %v", err)
		}
		w.Header().Set("X-Path", r.URL.Path)
		fmt.Fprintf(w, "%s %s|%s", r.Method, r.URL.Path, b)
	})
	tr := newTransport(t, &upstream.Transport{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range requests {
				path := fmt.Sprintf("/g%d/r%d", g, i)
				method, body := http.MethodGet, ""
				var rd io.Reader
				if i%2 == 1 {
					method, body = http.MethodPost, strings.Repeat(path, i)
					rd = strings.NewReader(body)
				}
				req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, rd)
				if err != nil {
					t.Error(err)
					return
				}
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Errorf("%s %s: %v", method, path, err)
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if want := method + " " + path + "|" + body; err != nil || string(b) != want || resp.Header.Get("X-Path") != path {
					t.Errorf("%s %s: got %q (X-Path %q), %v; want %q", method, path, b, resp.Header.Get("X-Path"), err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := srv.news.Load(); n > goroutines {
		t.Errorf("%d goroutines used %d connections, want at most %d", goroutines, n, goroutines)
	}
}

// closedAddr is an address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDialError(t *testing.T) {
	tr := newTransport(t, &upstream.Transport{})
	resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, "http://"+closedAddr(t)+"/", nil))
	if err == nil {
		resp.Body.Close()
		t.Fatal("RoundTrip to a closed port succeeded")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("error %q (%T) is not a *net.OpError with Op dial", err, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %q is not ECONNREFUSED", err)
	}
}

func TestDialAddress(t *testing.T) {
	errNoNet := errors.New("no network in this test")
	tests := []struct {
		url      string
		wantAddr string
	}{
		{"http://upstream.test/v1", "upstream.test:80"},
		{"https://upstream.test/v1", "upstream.test:443"},
		{"http://upstream.test:8080/", "upstream.test:8080"},
		{"https://[::1]/", "[::1]:443"},
		{"http://[::1]:81/", "[::1]:81"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			var network, addr string
			tr := newTransport(t, &upstream.Transport{Dial: func(_ context.Context, n, a string) (net.Conn, error) {
				network, addr = n, a
				return nil, errNoNet
			}})
			resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, tt.url, nil))
			if err == nil {
				resp.Body.Close()
			}
			if !errors.Is(err, errNoNet) {
				t.Errorf("error %v, want the Dial function's", err)
			}
			if network != "tcp" || addr != tt.wantAddr {
				t.Errorf("dialled %s %q, want tcp %q", network, addr, tt.wantAddr)
			}
		})
	}
}

// closeTracker is a request body that records its Close.
type closeTracker struct {
	io.Reader
	closed atomic.Bool
}

func (c *closeTracker) Close() error { c.closed.Store(true); return nil }

// TestRequestBodyClosed: "RoundTrip must always close the body, including on
// errors" (http.RoundTripper).
func TestRequestBodyClosed(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	tests := []struct {
		name string
		url  string
	}{
		{"answered", srv.URL},
		{"dial failed", "http://" + closedAddr(t)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTransport(t, &upstream.Transport{})
			body := &closeTracker{Reader: strings.NewReader("abc")}
			req := newRequest(t, http.MethodPost, tt.url, body)
			req.ContentLength = 3
			resp, err := tr.RoundTrip(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if !body.closed.Load() {
				t.Errorf("the request body was not closed (err %v)", err)
			}
		})
	}
}

// TestBodyOfUnsizedReader: http.NewRequest leaves ContentLength 0 for a body
// it cannot size, and "a value of 0 with a non-nil Body is also treated as
// unknown" (http.Request): such a body must reach the upstream or go to
// Fallback, never be dropped.
func TestBodyOfUnsizedReader(t *testing.T) {
	got := make(chan string, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
		io.WriteString(w, "ok")
	})
	fb := &stubRT{}
	tr := newTransport(t, &upstream.Transport{Fallback: fb})
	req := newRequest(t, http.MethodPost, srv.URL, io.MultiReader(strings.NewReader("hello")))
	if req.ContentLength != 0 || req.Body == nil || req.Body == http.NoBody {
		t.Fatalf("http.NewRequest: ContentLength %d, Body %T", req.ContentLength, req.Body)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if fb.calls.Load() == 1 {
		return
	}
	if b := <-got; b != "hello" {
		t.Errorf("the upstream got the body %q, want hello (or the request to go to Fallback)", b)
	}
}

// TestEmptyMethodIsGET: "For client requests, an empty string means GET"
// (http.Request.Method).
func TestEmptyMethodIsGET(t *testing.T) {
	got := make(chan string, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { got <- r.Method })
	tr := newTransport(t, &upstream.Transport{})
	req := newRequest(t, http.MethodGet, srv.URL, nil)
	req.Method = ""
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf(`Method "": %v`, err)
	}
	resp.Body.Close()
	if m := <-got; m != http.MethodGet {
		t.Errorf("the server saw method %q, want GET", m)
	}
}

// TestContentLengthWithoutBody: a request that announces bytes but has no
// Body must fail or be sent without them (net/http refuses it), not leave
// the upstream waiting for bytes that never come.
func TestContentLengthWithoutBody(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	})
	tr := newTransport(t, &upstream.Transport{})
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	req := newRequest(t, http.MethodPost, srv.URL, nil).WithContext(ctx)
	req.ContentLength = 5
	resp, err := tr.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ContentLength 5 with a nil Body: the round trip hung until its deadline")
	}
}

// TestBodyCloseDuringRead: closing a response body from another goroutine,
// how a stream is abandoned from outside, ends a Read blocked on it, and
// without a data race (net/http's bodies allow this).
func TestBodyCloseDuringRead(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part1")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	tr := newTransport(t, &upstream.Transport{})
	resp, err := tr.RoundTrip(newRequest(t, http.MethodGet, srv.URL, nil))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, p); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := resp.Body.Read(p)
		errc <- err
	}()
	resp.Body.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Read after Close returned no error")
		}
	case <-time.After(testTimeout):
		t.Error("a Read blocked on the body did not return after Close")
		srv.CloseClientConnections()
		<-errc
	}
}

// TestWrittenRequestNotResent: a request written whole on a pooled
// connection that the server then drops without answering (it read the
// request: a crashed miner, or the benchmark's "refused" upstream) is not
// sent again. The server may have begun the work, which Chutes bills.
func TestWrittenRequestNotResent(t *testing.T) {
	if !upstream.ChecksAlive {
		t.Skip("without the check before reuse, a request failing this way is sent again")
	}
	for _, rst := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "reset"}[rst], func(t *testing.T) {
			var requests atomic.Int32
			srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
				for {
					if _, _, err := readRequest(br); err != nil {
						return
					}
					if requests.Add(1) > 1 {
						if rst {
							c.(*net.TCPConn).SetLinger(0)
						}
						return // the handler's return closes the connection
					}
					if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
						return
					}
				}
			})
			tr := newTransport(t, &upstream.Transport{})
			if _, b := do(t, tr, newRequest(t, http.MethodPost, srv.URL(), strings.NewReader("first"))); b != "ok" {
				t.Fatalf("first response %q, want ok", b)
			}
			resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, srv.URL(), strings.NewReader("second")))
			if err == nil {
				resp.Body.Close()
				t.Fatal("the dropped request succeeded")
			}
			if n := requests.Load(); n != 2 {
				t.Errorf("the server read %d requests, want 2: the dropped one was sent again", n)
			}
			if n := srv.accepts.Load(); n != 1 {
				t.Errorf("the server accepted %d connections, want 1", n)
			}
		})
	}
}

// TestEarlyAnswer: a server that answers before it has read the whole
// body (413 for a body too large) and stops reading gets its answer to the
// caller, not the broken write's error; the connection is not pooled.
func TestEarlyAnswer(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn, br *bufio.Reader) {
		// read the head only
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"detail\":\"too big\"}")
		c.(*net.TCPConn).CloseWrite()
		// drain a little, as servers do before closing, then close with
		// the rest unread
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		io.CopyN(io.Discard, br, 64<<10)
	})
	tr := newTransport(t, &upstream.Transport{})
	body := bytes.Repeat([]byte("x"), 16<<20)
	resp, err := tr.RoundTrip(newRequest(t, http.MethodPost, srv.URL(), bytes.NewReader(body)))
	if err != nil {
		t.Fatalf("the server's early answer was lost: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != `{"detail":"too big"}` {
		t.Fatalf("got %d %q, want 413 and its body", resp.StatusCode, b)
	}
	if n := srv.accepts.Load(); n != 1 {
		t.Errorf("the server accepted %d connections, want 1", n)
	}
}
