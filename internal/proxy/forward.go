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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/chutes-proxy/chutes-proxy/internal/assemble"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// Causes of an attempt's cancellation, told apart by context.Cause.
var (
	errFirstByte = errors.New("first token timeout")
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

// committed is an upstream response whose first token is in hand (a
// stream) or whose whole reply is (a plain request): the model that
// produced it has served.
type committed struct {
	resp    *http.Response
	br      *bufio.Reader
	pending []byte // read before committing: a stream's first events, or a plain body
	whole   bool   // pending is the whole plain body
	sse     bool   // relayed as a stream
	json    bool   // pending is a reply assembled from a stream: sent as JSON
	cancel  context.CancelCauseFunc
	model   string
	key     string              // sent upstream; scrubbed from anything the upstream says
	idle    time.Duration       // the provider's idle_timeout
	reply   *assemble.Assembler // a stream's reply so far, when it may be resumed
}

func (c *committed) close() {
	// The body first: closed after the attempt's context is cancelled, the
	// upstream connection could not go back to the pool.
	c.resp.Body.Close()
	c.cancel(errDone)
	c.br.Reset(nil)
	readers.Put(c.br)
}

// call is one client request on its way along the chain: what every
// attempt, and a resumed stream, needs of it.
type call struct {
	s    *Server
	st   *state
	r    *http.Request
	info *reqInfo
	path string // the endpoint below a provider's base_url
	body payload.Body
	// chutesKey is the key for Chutes: the configured one or the client's.
	// Other providers get their own key and never this one.
	chutesKey string
	// plain: a plain chat or completion, which a provider with stream_plain
	// is sent as a stream and assembled; streamed makes that body once, on
	// first use (two hedged attempts may ask at once), so that a proxy with
	// stream_plain off copies no body.
	plain    bool
	streamed func() (payload.Body, error)
	// track: keep a stream's reply so far (resume_streams).
	track bool
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
	if key == "" && !s.reachesProvider(body.Model) {
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

	c := &call{s: s, st: st, r: r, info: info, path: path, body: body, chutesKey: key}
	if info.endpoint != epEmbeddings {
		if body.Stream {
			c.track = cfg.Failover.ResumeStreams && info.endpoint == epChat
		} else {
			c.plain, c.streamed = true, sync.OnceValues(body.Streamed)
		}
	}
	// With [failover] hedge, two attempts may run at once; only the one
	// whose first token came first commits, so got is set once.
	var got *committed
	var gotMu sync.Mutex
	try := func(ctx context.Context, model string) error {
		cm, err := c.attempt(ctx, c.body, model, false)
		if err == nil {
			gotMu.Lock()
			got = cm
			gotMu.Unlock()
		}
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
		if errors.Is(err, errNoChutesKey) {
			s.writeError(w, r, st, info, diagnose.MissingKey(cfg.ProxyKey != ""))
			return
		}
		s.writeError(w, r, st, info, diagnose.Explain(res, err, s.diagEnv(st, key, fromClient)))
		return
	}
	defer func() { got.close() }()
	c.relay(ctx, w, &got)
}

// ensureCatalog fetches the upstream's model list once when a 404 needs it
// to tell a misspelled model (suggest the closest) from a down chute, and
// no list is at hand yet; the health probe keeps it fresh after that.
func (s *Server) ensureCatalog(ctx context.Context, st *state, res failover.Result, key string) {
	if _, known := s.catalog.Listed(""); known {
		return
	}
	for _, a := range res.Attempts {
		if p, _ := st.cfg.Split(a.Model); a.Status == http.StatusNotFound && p == config.Chutes {
			ctx, cancel := context.WithTimeout(ctx, modelsWait)
			defer cancel()
			_ = s.catalog.Fetch(ctx, st.client, st.base, key)
			return
		}
	}
}

// errNoChutesKey fails a Chutes attempt of a chain that also has other
// providers, when there is no Chutes key: the other providers may serve.
var errNoChutesKey = &failover.UpstreamError{Status: http.StatusUnauthorized, Provider: config.Chutes,
	Body: []byte(`{"detail":"no Chutes API key: none configured and none in the request"}`)}

// reachesProvider reports whether the chain of model has a model of
// another provider than Chutes, which needs no Chutes key.
func (s *Server) reachesProvider(model string) bool {
	cfg := s.state.Load().cfg
	for _, id := range s.router.Resolve(model) {
		if p, _ := cfg.Split(id); p != config.Chutes {
			return true
		}
	}
	return false
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
		Provider: func(model string) diagnose.Provider {
			name, _ := st.cfg.Split(model)
			t := st.target(name)
			p := diagnose.Provider{Name: t.Name, BaseURL: t.BaseURL, KeyPrefix: config.Redact(t.Key.Reveal())}
			if cp, ok := st.cfg.Provider(name); ok {
				p.KeyFrom = cp.KeySetting()
			}
			return p
		},
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

// attempt makes one upstream request for model and waits for its first
// token: a stream is committed then; a plain request only once its whole
// reply is in hand. Everything that can go wrong before is returned as an
// error for failover to classify, because a Chutes miner can send 200
// headers and then hang, open a stream with an error event, or stall
// halfway through a reply. first_byte_timeout runs until the first token
// (role-only events and keep-alives do not count), idle_timeout between
// tokens after it. A continuation (resume) holds back the events before its
// first token: the client has them already.
func (c *call) attempt(ctx context.Context, body payload.Body, model string, continuation bool) (*committed, error) {
	prov, upModel := c.st.cfg.Split(model)
	t := c.st.target(prov)
	key := t.Key.Reveal()
	if t.IsChutes() {
		if key = c.chutesKey; key == "" {
			return nil, errNoChutesKey
		}
	}
	first, learned := c.s.router.CutOff(model, t.FirstByteTimeout)
	idle := t.IdleTimeout
	actx, cancel := context.WithCancelCause(ctx)
	var flowing atomic.Bool // a token came: the timer is idle_timeout now
	timer := time.AfterFunc(first, func() {
		if flowing.Load() {
			cancel(errIdle)
		} else {
			cancel(errFirstByte)
		}
	})
	timedOut := func() error {
		switch context.Cause(actx) {
		case errFirstByte:
			return &failover.TimeoutError{After: first, Learned: learned}
		case errIdle:
			return &failover.TimeoutError{After: idle, Idle: true}
		}
		return nil
	}
	fail := func(err error) (*committed, error) {
		timer.Stop()
		if te := timedOut(); te != nil {
			err = te
		}
		var se *failover.StreamError
		if errors.As(err, &se) {
			se.Reason = scrub(se.Reason, key)
		}
		cancel(errDone)
		return nil, err
	}

	assembled := c.plain && t.StreamPlain && !c.s.plainOnly(model)
	if assembled {
		if sb, err := c.streamed(); err == nil {
			body = sb
		} else {
			assembled = false // a body Streamed cannot edit goes as it is
		}
	}
	resp, err := c.send(actx, t, key, body, upModel)
	if err == nil && assembled && resp.StatusCode == http.StatusBadRequest {
		// Some servers refuse "stream": true or stream_options: ask plain
		// once; if that goes through, remember it for the model.
		resp.Body.Close()
		assembled = false
		if resp, err = c.send(actx, t, key, c.body, upModel); err == nil && resp.StatusCode < 400 {
			c.s.setPlainOnly(model)
			c.s.log.Info("the upstream refuses to stream plain requests for this model: sending them plain", "model", model)
		}
	}
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return fail(&failover.UpstreamError{
			Status:      resp.StatusCode,
			Provider:    t.Name,
			Body:        []byte(scrub(string(b), key)),
			ContentType: resp.Header.Get("Content-Type"),
			RetryAfter:  failover.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		})
	}

	br := readers.Get().(*bufio.Reader)
	br.Reset(resp.Body)
	cm := &committed{resp: resp, br: br, cancel: cancel, model: model, key: key, idle: idle,
		sse: strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")}
	// token is called at each token before the commit; false means this
	// attempt lost a hedge and must give up.
	token := func() bool {
		if !flowing.Swap(true) && !failover.FirstToken(ctx) {
			return false
		}
		timer.Reset(idle)
		return true
	}
	ep := assemble.Chat
	if c.info.endpoint == epCompletions {
		ep = assemble.Completions
	}
	switch {
	case cm.sse && assembled:
		// The client asked for one object: the whole reply is read
		// before the commit, so a cut or stall goes on to the next model.
		cm.pending, err = assembleReply(br, assemble.New(ep), token)
		cm.sse, cm.json, cm.whole = false, true, true
	case cm.sse:
		var held, tok []byte
		cm.reply = assemble.New(ep)
		held, tok, err = firstToken(br, cm.reply)
		if err == nil && !token() {
			err = failover.ErrHedgeLost
		}
		cm.pending = append(held, tok...)
		if continuation {
			cm.pending = tok
		}
		if !c.track {
			cm.reply = nil
		}
	default:
		if err = firstBytes(br, resp); err == nil {
			cm.pending, cm.whole, err = readAhead(br, resp.ContentLength)
		}
		if err == nil && !token() {
			err = failover.ErrHedgeLost
		}
	}
	if err != nil {
		resp.Body.Close()
		br.Reset(nil)
		readers.Put(br)
		return fail(err)
	}
	if !timer.Stop() {
		if te := timedOut(); te != nil {
			cm.close()
			return nil, te
		}
	}
	return cm, nil
}

// send makes one request to provider t with body, its model set to model
// (the provider's own id, without the NAME: prefix).
func (c *call) send(ctx context.Context, t target, key string, body payload.Body, model string) (*http.Response, error) {
	rd, n := body.Reader(model)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, upstreamURL(t.BaseURL, c.path, c.r.URL), rd)
	if err != nil {
		return nil, err
	}
	req.ContentLength = n
	req.GetBody = func() (io.ReadCloser, error) {
		rd, _ := body.Reader(model)
		return io.NopCloser(rd), nil
	}
	req.Header = upstreamHeader(c.r.Header, key)
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return t.transport.RoundTrip(req)
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

// relay copies a committed response to the client. A stream that breaks
// after its commit is resumed when it can be (resume_streams), else it ends
// with a stream_interrupted event; either way a cut never looks like an
// ending.
func (c *call) relay(ctx context.Context, w http.ResponseWriter, got **committed) {
	cm, info := *got, c.info
	h := w.Header()
	copyResponseHeader(h, cm.resp.Header)
	h.Set("X-Chutes-Proxy-Model", cm.model)
	h.Set("X-Chutes-Proxy-Attempts", strconv.Itoa(info.attempts))
	switch {
	case cm.sse:
		h.Del("Content-Length")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
	case cm.json:
		h.Del("X-Accel-Buffering")
		h.Del("Cache-Control") // the stream's, not the reply's
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(cm.pending)))
	}
	w.WriteHeader(cm.resp.StatusCode)
	rc := http.NewResponseController(w)

	var ids *idRewrite
	text, firstID := "", ""
	cuts := map[string]int{} // per model: a model cut twice is not asked again
	if cm.reply != nil {
		firstID = cm.reply.ID()
	}
	for {
		var err error
		idle := c.idleTimer(cm)
		if cm.sse {
			err = relaySSE(w, rc, cm, idle.touch, ids)
		} else {
			err = relayPlain(w, cm, idle.touch)
		}
		idle.stop()
		if err == nil || errors.Is(err, errClientWrite) {
			return
		}
		// The upstream broke after the commit: the client has part of a
		// reply, and the model's breaker hears of it (a request_timeout is
		// not the model's fault).
		reason := c.cutReason(cm, err)
		if c.r.Context().Err() == nil && context.Cause(cm.resp.Request.Context()) != context.DeadlineExceeded {
			c.s.router.Cut(cm.model)
		}
		if cm.reply != nil {
			text += cm.reply.Text()
			cuts[cm.model]++
			if next := c.resume(ctx, cm, text, reason, cuts[cm.model] > 1); next != nil {
				cm.close()
				cm, *got = next, next
				ids = newIDRewrite(next.reply.ID(), firstID)
				_, _ = w.Write([]byte(": resumed on " + next.model + "\n\n"))
				continue
			}
		}
		c.s.log.LogAttrs(c.r.Context(), slog.LevelWarn, "stream interrupted",
			slog.String("request_id", info.id), slog.String("model", cm.model), slog.String("reason", reason))
		info.errCode = diagnose.CodeStreamInterrupted
		if cm.sse {
			e := diagnose.StreamInterrupted(cm.model, reason)
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
}

// idle cuts a committed response that stays silent for idle_timeout.
type idle struct {
	t *time.Timer
	d time.Duration
}

func (c *call) idleTimer(cm *committed) idle {
	return idle{t: time.AfterFunc(cm.idle, func() { cm.cancel(errIdle) }), d: cm.idle}
}

func (i idle) touch() { i.t.Reset(i.d) }
func (i idle) stop()  { i.t.Stop() }

// cutReason says why a committed response broke, for the log and the
// stream_interrupted event.
func (c *call) cutReason(cm *committed, err error) string {
	switch context.Cause(cm.resp.Request.Context()) {
	case errIdle:
		return "no token for " + human.Duration(cm.idle) + " (idle_timeout)"
	case context.DeadlineExceeded:
		return "request_timeout reached"
	}
	return scrub(err.Error(), cm.key)
}

// resume continues a stream cut after its first token: the same model once
// more (another miner usually takes it; after a second cut, the models after
// it), then the rest of its chain, within what is left of max_attempts and
// request_timeout, asking each to go on from text. It returns the
// continuation, committed at its first token, or nil when the reply cannot
// or could not be continued: cut inside its reasoning or a tool call, or no
// model took it up.
func (c *call) resume(ctx context.Context, cm *committed, text, reason string, again bool) *committed {
	left := c.st.cfg.Failover.MaxAttempts - c.info.attempts
	if text == "" || !cm.reply.Resumable() || left <= 0 || ctx.Err() != nil {
		return nil
	}
	from := cm.model
	if again {
		chain := c.s.router.Resolve(c.body.Model)
		i := slices.Index(chain, cm.model)
		if i < 0 || i+1 >= len(chain) {
			return nil
		}
		from = chain[i+1]
	}
	body, err := c.body.Continued(text, true)
	if err != nil {
		return nil
	}
	var next *committed
	try := func(ctx context.Context, model string) error {
		next, err = c.attempt(ctx, body, model, true)
		var ue *failover.UpstreamError
		if errors.As(err, &ue) && ue.Status == http.StatusBadRequest {
			// An upstream that does not know continue_final_message:
			// the prefill alone.
			if plain, perr := c.body.Continued(text, false); perr == nil {
				next, err = c.attempt(ctx, plain, model, true)
			}
		}
		return err
	}
	res, err := c.s.router.Do(ctx, failover.Request{Model: c.body.Model, From: from, MaxAttempts: left}, try)
	c.info.attempts += res.UpstreamAttempts()
	if err != nil {
		c.s.log.LogAttrs(c.r.Context(), slog.LevelWarn, "stream not resumed",
			slog.String("request_id", c.info.id), slog.String("model", cm.model), slog.String("reason", reason),
			slog.String("resume", failover.Describe(err)))
		return nil
	}
	c.info.served = res.Model
	c.s.log.LogAttrs(c.r.Context(), slog.LevelInfo, "stream resumed",
		slog.String("request_id", c.info.id), slog.String("model", cm.model), slog.String("reason", reason),
		slog.String("resumed_on", res.Model), slog.Int("chars_so_far", utf8.RuneCountInString(text)))
	if c.s.resumed != nil {
		c.s.resumed(cm.model, res.Model)
	}
	return next
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
