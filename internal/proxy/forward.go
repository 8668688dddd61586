package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// Causes of an attempt's cancellation, told apart by context.Cause.
var (
	errFirstByte = errors.New("first byte timeout")
	errIdle      = errors.New("idle timeout")
	errDone      = errors.New("attempt finished")
)

// maxErrorBody bounds what is read of an upstream error body: enough for any
// diagnosis, small enough that a hostile upstream cannot exhaust memory.
const maxErrorBody = 16 << 10

// bufSize is the read buffer of a committed response, from a pool. 4 KiB
// holds any ordinary SSE event (longer lines pass through in pieces) and
// keeps a thousand open streams' heap small.
const bufSize = 4 << 10

var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

// committed is an upstream response whose first byte is in hand: the model
// that produced it has served.
type committed struct {
	resp    *http.Response
	br      *bufio.Reader
	pending []byte // read before committing: SSE's first event, or a plain body
	whole   bool   // pending is the whole plain body
	sse     bool
	cancel  context.CancelCauseFunc
	model   string
	key     string // sent upstream; scrubbed from anything the upstream says
}

func (c *committed) close() {
	// The body first: closed after the attempt's context is cancelled, the
	// upstream connection could not go back to the pool.
	c.resp.Body.Close()
	c.cancel(errDone)
	c.br.Reset(nil)
	readers.Put(c.br)
}

// forward serves a chat, completion or embedding request with failover.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo, path string) {
	cfg := st.cfg
	raw, err := readBody(r, st.maxBody)
	if err != nil {
		s.writeError(w, r, st, info, diagnose.BodyError(err, cfg.MaxBodyMB))
		return
	}
	body, err := payload.Parse(raw)
	if err != nil {
		s.writeError(w, r, st, info, diagnose.BodyError(err, cfg.MaxBodyMB))
		return
	}
	info.model, info.stream = body.Model, body.Stream

	key, fromClient := s.upstreamKey(st, r)
	if key == "" {
		s.writeError(w, r, st, info, diagnose.MissingKey(cfg.ProxyKey != ""))
		return
	}
	if s.gate != nil {
		if de := s.gate(r.Context()); de != nil {
			s.writeError(w, r, st, info, de)
			return
		}
	}

	ctx, cancel := context.WithTimeout(r.Context(), cfg.Upstream.RequestTimeout.D())
	defer cancel()

	var c *committed
	url := upstreamURL(st.base, path, r.URL)
	try := func(ctx context.Context, model string) error {
		var err error
		c, err = s.attempt(ctx, st, r, url, body, model, key)
		return err
	}
	res, err := s.router.Do(ctx, failover.Request{Model: body.Model, PromptTokens: failover.EstimateTokens(len(raw))}, try)
	info.attempts = res.UpstreamAttempts()
	info.served = res.Model
	if err != nil {
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			info.errCode = "client_closed"
			return // the client went away: nobody to answer
		}
		s.ensureCatalog(r.Context(), st, res, key)
		s.writeError(w, r, st, info, diagnose.Explain(res, err, s.diagEnv(st, key, fromClient)))
		return
	}
	defer c.close()
	s.relay(w, r, st, info, c)
}

// ensureCatalog fetches the upstream's model list once when a 404 needs it
// to tell a misspelled model (suggest the closest) from a down chute, and
// no list is at hand yet; the health probe keeps it fresh after that.
func (s *Server) ensureCatalog(ctx context.Context, st *state, res failover.Result, key string) {
	if _, known := s.catalog.Listed(""); known {
		return
	}
	for _, a := range res.Attempts {
		if a.Status == http.StatusNotFound {
			ctx, cancel := context.WithTimeout(ctx, modelsWait)
			defer cancel()
			_ = s.catalog.Fetch(ctx, st.client, st.base, key)
			return
		}
	}
}

// upstreamKey picks the key sent to Chutes: the configured one, else the
// client's own bearer, unless a proxy_key is set (then the client's bearer
// is the proxy key and never leaves the machine).
func (s *Server) upstreamKey(st *state, r *http.Request) (key string, fromClient bool) {
	if k := st.cfg.Upstream.APIKey.Reveal(); k != "" {
		return k, false
	}
	if st.cfg.ProxyKey != "" {
		return "", false
	}
	k := bearer(r)
	return k, k != ""
}

func (s *Server) diagEnv(st *state, key string, fromClient bool) diagnose.Env {
	env := diagnose.Env{
		BaseURL:       st.base,
		KeyPrefix:     config.Redact(key),
		KeyFromClient: fromClient,
		KeyLooksWrong: key != "" && !strings.HasPrefix(key, "cpk_"),
		Known:         s.catalog.IDs,
		Account:       s.account,
	}
	if !fromClient {
		for _, n := range st.cfg.Notes {
			if strings.Contains(n, "api_key") {
				env.KeyNotes = append(env.KeyNotes, n)
			}
		}
	}
	return env
}

// readBody reads the whole request body once, into a buffer of the
// declared size when there is one, refusing more than limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, diagnose.ErrBodyTooLarge
	}
	if r.ContentLength >= 0 {
		buf := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			return nil, fmt.Errorf("reading the request body: %w", err)
		}
		return buf, nil
	}
	var b bytes.Buffer
	n, err := b.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	if n > limit {
		return nil, diagnose.ErrBodyTooLarge
	}
	return b.Bytes(), nil
}

// attempt makes one upstream request for model and waits for the first
// byte of a successful body. Everything that can go wrong before that byte
// is returned as an error for failover to classify; the model is committed
// only once that byte is in hand, because a Chutes miner can send 200
// headers and then hang, or open a stream with an error event.
func (s *Server) attempt(ctx context.Context, st *state, r *http.Request, url string, body payload.Body, model, key string) (*committed, error) {
	actx, cancel := context.WithCancelCause(ctx)
	firstByte := st.cfg.Upstream.FirstByteTimeout.D()
	timer := time.AfterFunc(firstByte, func() { cancel(errFirstByte) })
	fail := func(err error) (*committed, error) {
		timer.Stop()
		if context.Cause(actx) == errFirstByte {
			err = &failover.TimeoutError{After: firstByte}
		}
		var se *failover.StreamError
		if errors.As(err, &se) {
			se.Reason = scrub(se.Reason, key)
		}
		cancel(errDone)
		return nil, err
	}

	rd, n := body.Reader(model)
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url, rd)
	if err != nil {
		return fail(err)
	}
	req.ContentLength = n
	req.GetBody = func() (io.ReadCloser, error) {
		rd, _ := body.Reader(model)
		return io.NopCloser(rd), nil
	}
	req.Header = upstreamHeader(r.Header, key)
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := st.transport.RoundTrip(req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return fail(&failover.UpstreamError{
			Status:      resp.StatusCode,
			Body:        []byte(scrub(string(b), key)),
			ContentType: resp.Header.Get("Content-Type"),
			RetryAfter:  failover.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		})
	}

	br := readers.Get().(*bufio.Reader)
	br.Reset(resp.Body)
	c := &committed{resp: resp, br: br, cancel: cancel, model: model, key: key,
		sse: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}
	if c.sse {
		c.pending, err = firstEvent(br)
	} else if err = firstBytes(br, resp); err == nil {
		c.pending, c.whole, err = readAhead(br, resp.ContentLength)
	}
	if err != nil {
		resp.Body.Close()
		br.Reset(nil)
		readers.Put(br)
		return fail(err)
	}
	if !timer.Stop() && context.Cause(actx) == errFirstByte {
		c.close()
		return nil, &failover.TimeoutError{After: firstByte}
	}
	return c, nil
}

// maxWholeBody is the largest non-stream answer read whole before the
// model is committed. A chat completion is a few KiB and arrives at once;
// holding it lets a reply that a miner cuts halfway fail over to the next
// model instead of reaching the client as a dropped connection. Larger or
// unsized bodies stream through.
const maxWholeBody = 1 << 20

// scrub replaces the key in an upstream's words with its redacted form: an
// upstream that echoes the key back must not show it to the client, who in
// proxy_key mode is not meant to know it.
func scrub(s, key string) string {
	if key == "" || !strings.Contains(s, key) {
		return s
	}
	return strings.ReplaceAll(s, key, config.Redact(key))
}

// readAhead reads a plain body of up to maxWholeBody bytes whole, sized
// (Content-Length n) or not (n < 0), still under the first-byte timer. A
// body that breaks off, or that is an error object in a 200 (as Chutes
// sends when a miner fails a non-stream request), is the model's failure.
// A larger body is returned in part (whole false); the rest streams.
func readAhead(br *bufio.Reader, n int64) (pending []byte, whole bool, err error) {
	switch {
	case n == 0:
		return nil, true, nil
	case n > maxWholeBody:
		return nil, false, nil
	case n > 0:
		pending = make([]byte, n)
		if got, err := io.ReadFull(br, pending); err != nil {
			return nil, false, &failover.StreamError{Reason: fmt.Sprintf("the reply was cut off after %d of %d bytes", got, n)}
		}
	default:
		var b bytes.Buffer
		got, err := b.ReadFrom(io.LimitReader(br, maxWholeBody+1))
		if err != nil {
			return nil, false, &failover.StreamError{Reason: fmt.Sprintf("the reply was cut off after %d bytes: %v", got, err)}
		}
		if got > maxWholeBody {
			return b.Bytes(), false, nil
		}
		pending = b.Bytes()
	}
	if isErrorObject(pending) {
		return nil, false, &failover.StreamError{Reason: streamReason(bytes.TrimSpace(pending))}
	}
	return pending, true, nil
}

// firstBytes waits for the first byte of a plain response and refuses what
// is not the API (an HTML page from a wrong base_url or a broken miner).
func firstBytes(br *bufio.Reader, resp *http.Response) error {
	if _, err := br.Peek(1); err != nil {
		if err == io.EOF {
			if resp.StatusCode == http.StatusOK && resp.Request.Method == http.MethodPost {
				return &failover.NotAPIError{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Sample: "an empty body"}
			}
			return nil // an empty body is a complete answer
		}
		return fmt.Errorf("reading the first byte: %w", err)
	}
	head, _ := br.Peek(min(br.Buffered(), 512))
	head = bytes.TrimLeft(head, " \t\r\n")
	ct := resp.Header.Get("Content-Type")
	if strings.HasPrefix(ct, "text/html") || (len(head) > 0 && head[0] == '<') {
		return &failover.NotAPIError{Status: resp.StatusCode, ContentType: ct, Sample: string(head[:min(len(head), 80)])}
	}
	return nil
}

// relay copies a committed response to the client.
func (s *Server) relay(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo, c *committed) {
	h := w.Header()
	copyResponseHeader(h, c.resp.Header)
	h.Set("X-Chutes-Proxy-Model", c.model)
	h.Set("X-Chutes-Proxy-Attempts", strconv.Itoa(info.attempts))
	if c.sse {
		h.Del("Content-Length")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
	}
	w.WriteHeader(c.resp.StatusCode)

	idle := st.cfg.Upstream.IdleTimeout.D()
	timer := time.AfterFunc(idle, func() { c.cancel(errIdle) })
	defer timer.Stop()
	rc := http.NewResponseController(w)

	var err error
	if c.sse {
		err = relaySSE(w, rc, c, func() { timer.Reset(idle) })
	} else {
		err = relayPlain(w, c, func() { timer.Reset(idle) })
	}
	if err == nil || errors.Is(err, errClientWrite) {
		return
	}
	// The upstream broke after the commit: the client has part of a reply.
	reason := scrub(err.Error(), c.key)
	if context.Cause(c.resp.Request.Context()) == errIdle {
		reason = "no data from the upstream for " + idle.String() + " (idle_timeout)"
	} else if context.Cause(c.resp.Request.Context()) == context.DeadlineExceeded {
		reason = "request_timeout reached"
	}
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "stream interrupted",
		slog.String("request_id", info.id), slog.String("model", c.model), slog.String("reason", reason))
	info.errCode = diagnose.CodeStreamInterrupted
	if c.sse {
		e := diagnose.StreamInterrupted(c.model, reason)
		if errors.Is(err, errMidLine) {
			// end the broken line and its event, so the error event parses
			_, _ = w.Write([]byte("\n\n"))
		}
		_, _ = w.Write([]byte("data: "))
		_, _ = w.Write(e.JSON())
		_, _ = w.Write([]byte("\n\n"))
		_ = rc.Flush()
	}
	// Close the connection so the client cannot take a cut reply for a
	// whole one.
	panic(http.ErrAbortHandler)
}

// errClientWrite marks a failed write to the client: it went away, and
// there is nobody left to tell.
var errClientWrite = errors.New("writing to the client")

// relayPlain copies a non-stream body: the one read whole before the
// commit, or else as it arrives.
func relayPlain(w io.Writer, c *committed, touch func()) error {
	if len(c.pending) > 0 {
		if _, err := w.Write(c.pending); err != nil {
			return fmt.Errorf("%w: %w", errClientWrite, err)
		}
	}
	if c.whole {
		return nil
	}
	for {
		b, err := c.br.Peek(1)
		if len(b) > 0 {
			n := c.br.Buffered()
			chunk, _ := c.br.Peek(n)
			if _, werr := w.Write(chunk); werr != nil {
				return fmt.Errorf("%w: %w", errClientWrite, werr)
			}
			_, _ = c.br.Discard(n)
			touch()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
