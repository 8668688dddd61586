package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

// Markers that must never reach a log line: one in every prompt, one in
// every reply the fake upstream sends.
const (
	promptMarker = "PROMPTMARKER7"
	replyMarker  = "REPLYMARKER9"
)

const (
	faultModel = "chaos/fault"
	goodModel  = "chaos/good"
)

// Short time-outs keep every fault bounded.
const (
	firstByte = 500 * time.Millisecond
	idle      = 500 * time.Millisecond
)

// newConfig is the embedded default pointed at upstream, with the chaos keys
// and short time-outs; edit may change it further.
func newConfig(t testing.TB, upstream string, edit func(*config.Config)) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = upstream + "/v1"
	cfg.Upstream.APIKey = upstreamKey
	cfg.ProxyKey = proxyKey
	cfg.Upstream.FirstByteTimeout = config.Duration(firstByte)
	cfg.Upstream.IdleTimeout = config.Duration(idle)
	cfg.Upstream.RequestTimeout = config.Duration(20 * time.Second)
	cfg.Models = []config.Model{{ID: faultModel, Fallbacks: []string{goodModel}}}
	if edit != nil {
		edit(cfg)
	}
	return cfg
}

// testProxy is a proxy served by proxy.HTTPServer on a loopback port.
type testProxy struct {
	URL  string
	Addr string
	Srv  *proxy.Server
	HTTP *http.Server
	logs *lockedBuffer
	// accepted counts the connections the server has accepted.
	accepted atomic.Int64
}

// countingListener counts the connections accepted from it.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startProxy serves cfg with the real http.Server; its logs go to the
// suite's sink and to the proxy's own buffer. At cleanup it checks that
// nothing panicked.
func startProxy(t testing.TB, cfg *config.Config) *testProxy {
	return serveProxy(t, cfg, false)
}

// startProxyWithPages is startProxy with /, /status and /metrics wired as
// the app wires them (a health Monitor as the router's observer).
func startProxyWithPages(t testing.TB, cfg *config.Config) *testProxy {
	return serveProxy(t, cfg, true)
}

func serveProxy(t testing.TB, cfg *config.Config, pages bool) *testProxy {
	t.Helper()
	p := &testProxy{logs: &lockedBuffer{}}
	logger := slog.New(slog.NewJSONHandler(io.MultiWriter(p.logs, captured.writer("log "+t.Name())),
		&slog.HandlerOptions{Level: slog.LevelDebug}))
	if pages {
		cat := catalog.New()
		mon := health.New(health.Options{Config: cfg, Catalog: cat, Logger: logger})
		router := failover.New(cfg, logger, mon)
		p.Srv = proxy.New(proxy.Options{Config: cfg, Router: router, Catalog: cat, Logger: logger, Pages: mon.Handler(router)})
	} else {
		p.Srv = proxy.New(proxy.Options{Config: cfg, Logger: logger})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = ln.Addr().String()
	p.URL = "http://" + p.Addr
	p.HTTP = proxy.HTTPServer(p.Addr, p.Srv, logger)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.HTTP.Serve(countingListener{ln, &p.accepted})
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := p.HTTP.Shutdown(ctx); err != nil {
			_ = p.HTTP.Close()
		}
		<-done
		p.Srv.Close()
		if s := p.logs.String(); strings.Contains(s, "panic serving") {
			t.Errorf("the proxy panicked:\n%s", s)
		}
	})
	return p
}

// upstream is a fake Chutes that answers per model with a script.
type upstream struct {
	*httptest.Server
	stop chan struct{} // closed at cleanup: drips and hangs end

	mu    sync.Mutex
	act   map[string]handler
	calls map[string]int
}

// handler answers one upstream request; stream is the request's "stream".
type handler func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool)

func newUpstream(t testing.TB, tls bool) *upstream {
	u := &upstream{stop: make(chan struct{}), act: map[string]handler{}, calls: map[string]int{}}
	h := http.HandlerFunc(u.serve)
	if tls {
		u.Server = httptest.NewUnstartedServer(h)
		u.Config.ErrorLog = log.New(io.Discard, "", 0) // "TLS handshake error": expected
		u.StartTLS()
	} else {
		u.Server = httptest.NewServer(h)
	}
	u.set(goodModel, good)
	t.Cleanup(func() {
		close(u.stop)
		u.CloseClientConnections()
		u.Close()
	})
	return u
}

func (u *upstream) set(model string, h handler) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.act[model] = h
}

func (u *upstream) count(model string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[model]
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.Unmarshal(b, &req)
	u.mu.Lock()
	u.calls[req.Model]++
	h := u.act[req.Model]
	u.mu.Unlock()
	if h == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"detail":"model not found: %s"}`, req.Model)
		return
	}
	h(u, w, r, req.Stream)
}

// sleep waits d, or less when the request or the upstream ends; false then.
func (u *upstream) sleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
	case <-u.stop:
	}
	return false
}

func chunk(model, text string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":%q,"choices":[{"index":0,"delta":{"content":%q},"finish_reason":null}]}`, model, text)
}

func completion(model string) string {
	return fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hello from %s %s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, model, model, replyMarker)
}

// good answers a whole reply, streamed or not, and names its model.
func good(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
	model := goodModel
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, completion(model))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, c := range []string{"hello ", "from ", model + " " + replyMarker} {
		fmt.Fprintf(w, "data: %s\n\n", chunk(model, c))
		_ = rc.Flush()
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

// okAs is good under another model's name.
func okAs(model string) handler {
	return func(u *upstream, w http.ResponseWriter, r *http.Request, stream bool) {
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, completion(model))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\ndata: [DONE]\n\n", chunk(model, "hi "+replyMarker))
	}
}

// hijack takes the raw connection of an upstream request.
func hijack(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter) {
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	return c, rw
}

// reset closes c with an RST instead of a FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// chatBody is a chat request carrying the prompt marker.
func chatBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"say hi %s"}],"stream":%v}`, model, promptMarker, stream)
}

// newClient is a client with its own transport, closed at cleanup.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// result is what a client saw of one request.
type result struct {
	stream  bool
	err     error // no response at all
	status  int
	header  http.Header
	body    []byte
	readErr error // the body ended with an error (connection cut)
}

// send posts a chat request for model and reads the whole answer; every
// byte read is added to the sink.
func send(t testing.TB, c *http.Client, base, model string, stream bool) result {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(chatBody(model, stream)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+proxyKey)
	return doRequest(t, c, req, stream)
}

func doRequest(t testing.TB, c *http.Client, req *http.Request, stream bool) result {
	t.Helper()
	res := result{stream: stream}
	resp, err := c.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	res.status, res.header = resp.StatusCode, resp.Header
	res.body, res.readErr = io.ReadAll(resp.Body)
	var hb bytes.Buffer
	_ = resp.Header.Write(&hb)
	captured.add("response header "+t.Name(), hb.Bytes())
	captured.add("response body "+t.Name(), res.body)
	return res
}

// openAIError parses an OpenAI-shaped error body; ok is false when b is not
// one.
func openAIError(b []byte) (code, message string, ok bool) {
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" || e.Error.Code == nil {
		return "", "", false
	}
	return *e.Error.Code, e.Error.Message, true
}

// outcome names what the client saw, in the words of the fault table. A
// name starting with "LOST" is a request not answered cleanly.
func (r result) outcome() string {
	if r.err != nil {
		return "LOST: no response: " + r.err.Error()
	}
	if r.status >= 400 {
		code, _, ok := openAIError(r.body)
		if !ok {
			return fmt.Sprintf("LOST: %d without an OpenAI error body: %.200q", r.status, r.body)
		}
		if r.readErr != nil {
			return fmt.Sprintf("LOST: %d %s cut: %v", r.status, code, r.readErr)
		}
		return fmt.Sprintf("%d %s", r.status, code)
	}
	if r.status != http.StatusOK {
		return fmt.Sprintf("LOST: status %d", r.status)
	}
	served := r.header.Get("X-Chutes-Proxy-Model")
	attempts := r.header.Get("X-Chutes-Proxy-Attempts")
	if strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		events := sseData(r.body)
		last := ""
		if len(events) > 0 {
			last = events[len(events)-1]
		}
		switch {
		case r.readErr == nil && last == "[DONE]":
			return fmt.Sprintf("200 %s (%s attempts)", served, attempts)
		case r.readErr != nil && strings.Contains(last, `"stream_interrupted"`):
			if _, _, ok := openAIError([]byte(last)); !ok {
				return "LOST: stream_interrupted event not OpenAI-shaped: " + last
			}
			return fmt.Sprintf("200 %s then stream_interrupted, closed", served)
		case r.readErr != nil:
			return fmt.Sprintf("LOST: stream cut without stream_interrupted after %q: %v", last, r.readErr)
		}
		return fmt.Sprintf("LOST: stream ended cleanly without [DONE], last %q", last)
	}
	if r.readErr != nil {
		if cl := r.header.Get("Content-Length"); cl != "" {
			if n, _ := strconv.Atoi(cl); n > len(r.body) {
				return fmt.Sprintf("200 %s truncated, closed", served)
			}
		} else if errors.Is(r.readErr, io.ErrUnexpectedEOF) {
			return fmt.Sprintf("200 %s truncated, closed", served)
		}
		return fmt.Sprintf("LOST: plain body cut: %v", r.readErr)
	}
	var v struct {
		Choices []json.RawMessage `json:"choices"`
	}
	if json.Unmarshal(r.body, &v) != nil || len(v.Choices) == 0 {
		return fmt.Sprintf("LOST: 200 without a completion: %.200q", r.body)
	}
	return fmt.Sprintf("200 %s (%s attempts)", served, attempts)
}

// sseData returns the data values of a stream's events, in order.
func sseData(b []byte) []string {
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if v, ok := strings.CutPrefix(line, "data:"); ok {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// eventually polls cond every 10 ms until it holds, for at most timeout;
// it reports whether cond held.
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // the poll's period, not a wait for an event
	}
	return true
}

// freePort returns a loopback address nobody listens on.
func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Short names for config types in table literals.
type configT = config.Config

func cfgDuration(d time.Duration) config.Duration { return config.Duration(d) }
