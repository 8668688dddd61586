// Package upstream is the client of the proxy's hot path: HTTP/1.1 to the
// upstream over a pool of keep-alive connections, each request written and
// its response read in the caller's own goroutine.
//
// net/http's Transport runs two goroutines per connection (readLoop and
// writeLoop) and hands every request and every response between them and
// the caller. On loopback those hand-offs cost more CPU than everything
// chutes-proxy does itself: about 75 µs of the 170 µs a proxied request
// cost (docs/BENCHMARKS.md). Here a request is one buffered write and one
// read of the response head, in the goroutine that asked.
//
// HTTP/1.1 is also what nginx, HAProxy and Envoy speak to upstreams by
// default. Against a remote HTTPS upstream the price is one TLS connection
// per concurrent request instead of HTTP/2's one for all, paid once: the
// pool keeps them warm.
package upstream

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of the zero Transport's limits.
const (
	DefaultMaxIdlePerHost = 256
	DefaultIdleTimeout    = 90 * time.Second
	// MaxHeaderBytes bounds a response head, so that an upstream sending
	// headers without end cannot exhaust memory (net/http's Transport
	// allows 10 MB; 1 MiB is plenty for any API's answer).
	MaxHeaderBytes = 1 << 20
	bufSize        = 4 << 10
	max1xx         = 5
	// earlyAnswerWait is how long an answer is waited for after the
	// request could not be written whole.
	earlyAnswerWait = 100 * time.Millisecond
)

// ErrHeaderTooLarge is returned for a response head over MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("the upstream's response headers exceed 1 MiB")

// aLongTimeAgo is a deadline in the past: setting it unblocks a connection's
// pending read or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// Transport is an http.RoundTripper for http:// and https:// URLs. Requests
// it does not handle go to Fallback: those an environment proxy applies to
// (HTTPS_PROXY...), those whose body has no known length, and those whose
// headers would not survive being written verbatim.
//
// The zero value is usable only with a Fallback; Dial defaults to a plain
// net.Dialer.
type Transport struct {
	// Dial opens a TCP connection; nil means a net.Dialer with a 10 s
	// time-out.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig is cloned for each HTTPS connection; nil means defaults.
	// Its NextProtos are replaced: the connection speaks HTTP/1.1.
	TLSConfig *tls.Config
	// HandshakeTimeout bounds a TLS handshake; 0 means 10 s.
	HandshakeTimeout time.Duration
	// Proxy says whether a request goes through a proxy (nil: never); such
	// requests go to Fallback, which knows how to speak to one.
	Proxy func(*http.Request) (*url.URL, error)
	// Fallback serves the requests this Transport does not handle. It must
	// not be nil if Proxy is set or bodies of unknown length are sent.
	Fallback http.RoundTripper
	// MaxIdlePerHost is how many idle connections are kept per host; 0
	// means DefaultMaxIdlePerHost.
	MaxIdlePerHost int
	// IdleTimeout is how long an idle connection is kept; 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu   sync.Mutex
	idle map[hostKey][]*conn
	// closeIdle: CloseIdleConnections was called since the last request
	// began, so connections coming back are closed, not pooled.
	closeIdle bool
}

type hostKey struct{ scheme, addr string }

// RoundTrip sends req and returns the response with its head read. The
// response body must be closed; a body read to its end returns the
// connection to the pool, anything else closes it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		if t.Fallback == nil {
			return nil, fmt.Errorf("upstream: cannot send this request (scheme %q, body length %d) and no fallback is set", req.URL.Scheme, req.ContentLength)
		}
		return t.Fallback.RoundTrip(req)
	}
	if req.Body != nil {
		// RoundTrip must always close the body (http.RoundTripper); it
		// has been written whole when RoundTrip returns.
		defer req.Body.Close()
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err // nobody is waiting: do not make the upstream work
	}
	if req.Body == nil && req.ContentLength > 0 {
		return nil, fmt.Errorf("upstream: Request.ContentLength=%d with a nil Body", req.ContentLength)
	}
	key := hostKey{req.URL.Scheme, canonicalAddr(req.URL)}
	body := io.Reader(req.Body)
	for try := 0; ; try++ {
		get := t.get
		if try > 0 {
			// after a quiet spell every pooled connection may be stale
			get = t.dial
		}
		c, err := get(ctx, key, req.URL)
		if err != nil {
			return nil, err
		}
		resp, sent, err := c.roundTrip(req, body)
		if err == nil {
			return resp, nil
		}
		// A connection from the pool that the server closed while it was
		// idle fails before it carries the request: the request is sent
		// once more, on a new connection. Once a request has been written
		// whole it is not sent again (net/http's rule for a POST): the
		// server may have read it and begun the work, which Chutes bills.
		if !c.reused || try > 0 || ctx.Err() != nil || sent || !isStale(err) {
			return nil, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			rc, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			defer rc.Close()
			body = rc
		}
	}
}

// handles reports whether req is one for this Transport rather than its
// Fallback.
func (t *Transport) handles(req *http.Request) bool {
	if req.URL == nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.URL.Host == "" {
		return false
	}
	// 0 with a body is unknown too: http.NewRequest leaves it so for a
	// reader it cannot size.
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength <= 0 {
		return false
	}
	if t.Proxy != nil {
		if u, err := t.Proxy(req); err != nil || u != nil {
			return false
		}
	}
	if req.Method != "" && !validToken(req.Method) {
		return false
	}
	for k, vv := range req.Header {
		if !validToken(k) {
			return false
		}
		for _, v := range vv {
			if strings.ContainsAny(v, "\r\n\x00") {
				return false
			}
		}
	}
	return true
}

// CloseIdleConnections closes the pooled connections; connections in use
// are closed when their response is done with.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.closeIdle = true
	t.mu.Unlock()
	for _, cs := range idle {
		for _, c := range cs {
			c.nc.Close()
		}
	}
}

// get takes the most recently used idle connection to key, or dials one.
func (t *Transport) get(ctx context.Context, key hostKey, u *url.URL) (*conn, error) {
	idleTimeout := t.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = DefaultIdleTimeout
	}
	var stale []*conn
	t.mu.Lock()
	t.closeIdle = false
	cs := t.idle[key]
	for len(cs) > 0 {
		c := cs[len(cs)-1]
		cs[len(cs)-1] = nil
		cs = cs[:len(cs)-1]
		if time.Since(c.idleAt) > idleTimeout {
			// The rest are older still (last in, first out).
			stale = append(append(stale, cs...), c)
			cs = cs[:0]
			break
		}
		t.idle[key] = cs
		t.mu.Unlock()
		if alive(c.nc) {
			return c, nil
		}
		// closed by the server while idle; others may be too
		c.nc.Close()
		t.mu.Lock()
		cs = t.idle[key]
	}
	if t.idle != nil {
		t.idle[key] = cs
	}
	t.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
	return t.dial(ctx, key, u)
}

// put returns a connection whose response was read to its end to the pool.
func (t *Transport) put(c *conn) {
	if c.br.Buffered() > 0 {
		// bytes nobody asked for: the connection is out of step
		c.nc.Close()
		return
	}
	limit := t.MaxIdlePerHost
	if limit <= 0 {
		limit = DefaultMaxIdlePerHost
	}
	c.reused = true
	c.idleAt = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[hostKey][]*conn{}
	}
	if cs := t.idle[c.key]; !t.closeIdle && len(cs) < limit {
		t.idle[c.key] = append(cs, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.nc.Close()
}

func (t *Transport) dial(ctx context.Context, key hostKey, u *url.URL) (*conn, error) {
	dial := t.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", key.addr)
	if err != nil {
		return nil, err
	}
	if key.scheme == "https" {
		cfg := &tls.Config{}
		if t.TLSConfig != nil {
			cfg = t.TLSConfig.Clone()
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		cfg.NextProtos = []string{"http/1.1"}
		timeout := t.HandshakeTimeout
		if timeout <= 0 {
			timeout = 10 * time.Second
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		tc := tls.Client(nc, cfg)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, err
		}
		nc = tc
	}
	c := &conn{t: t, key: key, nc: nc}
	if tc, ok := nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		c.tls = &st
	}
	c.cr.nc = nc
	c.cr.limit = -1
	c.br = bufio.NewReaderSize(&c.cr, bufSize)
	c.bw = bufio.NewWriterSize(nc, bufSize)
	return c, nil
}

// conn is one connection to the upstream, used by one request at a time.
type conn struct {
	t      *Transport
	key    hostKey
	nc     net.Conn
	cr     connReader
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	tls    *tls.ConnectionState // of an HTTPS connection
	reused bool                 // it served a request before
}

// connReader reads the connection, at most limit bytes while limit ≥ 0:
// the bound of a response head.
type connReader struct {
	nc    net.Conn
	limit int64
}

func (r *connReader) Read(p []byte) (int, error) {
	if r.limit < 0 {
		return r.nc.Read(p)
	}
	if r.limit == 0 {
		return 0, ErrHeaderTooLarge
	}
	if int64(len(p)) > r.limit {
		p = p[:r.limit]
	}
	n, err := r.nc.Read(p)
	r.limit -= int64(n)
	return n, err
}

// roundTrip writes req with body and reads the response head. On error the
// connection is closed, and sent says whether the request may have reached
// the server: it was written whole (or, where pooled connections cannot be
// checked before use, the server sent no byte of an answer).
func (c *conn) roundTrip(req *http.Request, body io.Reader) (resp *http.Response, sent bool, err error) {
	ctx := req.Context()
	nc := c.nc
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error, sent bool) (*http.Response, bool, error) {
		stop()
		c.nc.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, true, cerr
		}
		return nil, sent, err
	}
	writeErr := c.writeRequest(req, body)
	if writeErr != nil {
		if ctx.Err() != nil {
			return fail(writeErr, false)
		}
		// A server may answer before it has read the whole body (a 413
		// for a body too large) and close: its answer says more than the
		// broken write. It is in the socket already, or not at all.
		nc.SetReadDeadline(time.Now().Add(earlyAnswerWait))
	}
	c.cr.limit = MaxHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		if writeErr != nil {
			return fail(writeErr, false)
		}
		if err == io.EOF {
			err = errClosedUnanswered
		}
		return fail(err, checksAlive)
	}
	for n := 0; ; n++ {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil && writeErr != nil {
			return fail(writeErr, true)
		}
		if err != nil {
			return fail(fmt.Errorf("reading the upstream's response: %w", err), true)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n == max1xx {
			return fail(errors.New("the upstream sent too many 1xx responses"), true)
		}
	}
	c.cr.limit = -1
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("the upstream switched protocols unasked (101)"), true)
	}
	resp.TLS = c.tls
	if writeErr != nil {
		// The rest of the answer may come, but the connection is done.
		nc.SetReadDeadline(time.Time{})
		resp.Close = true
	}
	b := &respBody{c: c, rc: resp.Body, stop: stop, ctx: ctx,
		keep: !resp.Close && !wantsClose(req)}
	b.eof = resp.Body == http.NoBody || resp.ContentLength == 0
	resp.Body = b
	return resp, false, nil
}

// errClosedUnanswered is an upstream that closed the connection after the
// request without a byte of an answer.
var errClosedUnanswered = fmt.Errorf("the upstream closed the connection without answering: %w", io.EOF)

func (c *conn) writeRequest(req *http.Request, body io.Reader) error {
	w := c.bw
	w.WriteString(cmp.Or(req.Method, http.MethodGet))
	w.WriteByte(' ')
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	if req.Host != "" {
		w.WriteString(req.Host)
	} else {
		w.WriteString(req.URL.Host)
	}
	w.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		for _, v := range vv {
			if v == "" && k == "User-Agent" {
				continue // net/http sends none for an empty one
			}
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		w.WriteString("User-Agent: Go-http-client/1.1\r\n")
	}
	hasBody := body != nil && req.Body != http.NoBody && req.ContentLength > 0
	if hasBody || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		var n [24]byte
		w.WriteString("Content-Length: ")
		length := int64(0)
		if hasBody {
			length = req.ContentLength
		}
		w.Write(strconv.AppendInt(n[:0], length, 10))
		w.WriteString("\r\n")
	}
	if wantsClose(req) {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	if hasBody {
		n, err := io.Copy(w, io.LimitReader(body, req.ContentLength))
		if err != nil {
			return fmt.Errorf("writing the request body: %w", err)
		}
		if n != req.ContentLength {
			return fmt.Errorf("the request body has %d bytes, not the %d of its Content-Length", n, req.ContentLength)
		}
	}
	return w.Flush()
}

// respBody is a response body on a pooled connection. Close may be called
// while a Read is blocked, to abandon a stream, as net/http allows.
type respBody struct {
	c    *conn
	rc   io.ReadCloser // net/http's reader: sized, chunked or to EOF; io.EOF comes with the last bytes
	stop func() bool   // unregisters the context's deadline hook
	ctx  context.Context
	keep bool // the connection may serve another request once read to its end

	mu     sync.Mutex // guards eof and closed
	eof    bool
	closed bool
}

func (b *respBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, errors.New("read on a closed response body")
	}
	n, err := b.rc.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil && b.ctx.Err() != nil:
		err = b.ctx.Err()
	}
	return n, err
}

// Close returns the connection to the pool if the body was read to its end
// and neither side asked to close; else it closes the connection, which is
// how a stream is abandoned.
func (b *respBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if !b.stop() {
		// the context ended: its hook has put a deadline on the connection
		b.c.nc.Close()
		return nil
	}
	if b.eof && b.keep {
		b.c.t.put(b.c)
		return nil
	}
	b.c.nc.Close()
	return nil
}

// isStale reports whether err is how a connection the server had closed
// while idle fails: EOF or a reset before any byte of an answer.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// canonicalAddr is u's host:port, with the scheme's port if none is given.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// validToken reports whether s is an HTTP token (RFC 9110 5.6.2), as
// header names and methods must be.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// wantsClose reports whether req asks for its connection to be closed.
func wantsClose(req *http.Request) bool {
	if req.Close {
		return true
	}
	for _, v := range req.Header["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), "close") {
				return true
			}
		}
	}
	return false
}
