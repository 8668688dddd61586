// Package proxy is chutes-proxy's HTTP side: it reads a client's request
// once, hands the walk along the fallback chain to failover, makes each
// upstream attempt, and copies the committed response to the client, flushed
// per SSE event.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// Options are what a Server is built from. Only Config is required.
type Options struct {
	Config *config.Config
	// Router walks chains; nil builds one from Config.
	Router *failover.Router
	// Catalog is the upstream's model list; nil builds an empty one that
	// the proxy fills on demand.
	Catalog *catalog.Catalog
	// Logger; nil discards.
	Logger *slog.Logger
	// Pages serves "/", "/status" and "/metrics"; nil answers 404 there.
	Pages http.Handler
	// Gate, when set, is asked before each upstream request of a chat,
	// completion or embedding (the daily quota); a non-nil error is written
	// as the response.
	Gate func(ctx context.Context) *diagnose.Error
	// Done, when set, hears how each chat, completion or embedding request
	// ended, once its response is over: the model that served ("" = none)
	// and "served" or the error code (stream_interrupted, client_closed ...).
	Done func(served, outcome string)
	// Resumed, when set, hears each stream resumed after a cut: the model
	// that was cut and the one that took it up (resume_streams).
	Resumed func(from, to string)
	// Account summarises the Chutes account ("212 of 300 requests used
	// today; balance $0.00") for the payment_required diagnosis; nil or ""
	// when unknown.
	Account func() string
}

// Server is the proxy's http.Handler.
type Server struct {
	state   atomic.Pointer[state]
	router  *failover.Router
	catalog *catalog.Catalog
	log     *slog.Logger
	pages   http.Handler
	gate    func(ctx context.Context) *diagnose.Error
	account func() string
	done    func(served, outcome string)
	resumed func(from, to string)
	// streamRefusers are the models whose upstream refused a plain request
	// sent as a stream (stream_plain): they are asked plain.
	streamRefusers sync.Map
}

func (s *Server) plainOnly(model string) bool {
	_, ok := s.streamRefusers.Load(model)
	return ok
}

func (s *Server) setPlainOnly(model string) { s.streamRefusers.Store(model, true) }

// state is everything derived from one config load.
type state struct {
	cfg       *config.Config
	base      string          // base_url without a trailing slash
	transport *http.Transport // every request to Chutes
	client    *http.Client    // model lists and probes, over transport
	// providers are the [[providers]] by name, each with its own transport
	// (its own connect_timeout, and never [upstream] resolver).
	providers map[string]target
	loopback  bool
	hosts     map[string]bool
	origins   map[string]bool
	maxBody   int64
}

// New builds a Server.
func New(o Options) *Server {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log, router: o.Router, catalog: o.Catalog, pages: o.Pages, gate: o.Gate, account: o.Account, done: o.Done, resumed: o.Resumed}
	if s.router == nil {
		s.router = failover.New(o.Config, log, nil)
	}
	if s.catalog == nil {
		s.catalog = catalog.New()
	}
	s.router.SetContextLengths(func(id string) int {
		e, _ := s.catalog.Lookup(id)
		return e.ContextLength
	})
	s.Reload(o.Config)
	return s
}

// Router returns the server's router.
func (s *Server) Router() *failover.Router { return s.router }

// Catalog returns the server's model list.
func (s *Server) Catalog() *catalog.Catalog { return s.catalog }

// Config returns the config in force.
func (s *Server) Config() *config.Config { return s.state.Load().cfg }

// Reload swaps in cfg for new requests; requests in flight finish on the
// config they started with. The upstream transport is kept unless its
// settings changed.
func (s *Server) Reload(cfg *config.Config) {
	old := s.state.Load()
	st := &state{
		cfg:      cfg,
		base:     strings.TrimRight(cfg.Upstream.BaseURL, "/"),
		loopback: config.IsLoopback(cfg.Listen),
		hosts:    map[string]bool{},
		origins:  map[string]bool{},
		maxBody:  int64(cfg.MaxBodyMB) << 20,
	}
	for _, h := range cfg.AllowedHosts {
		st.hosts[strings.ToLower(h)] = true
	}
	for _, o := range cfg.Compat.CORSOrigins {
		st.origins[strings.TrimRight(strings.ToLower(o), "/")] = true
	}
	if old != nil && old.cfg.Upstream.ConnectTimeout == cfg.Upstream.ConnectTimeout &&
		old.cfg.Upstream.Resolver == cfg.Upstream.Resolver {
		st.transport, st.client = old.transport, old.client
	} else {
		st.transport = NewTransport(cfg.Upstream)
		st.client = &http.Client{Transport: st.transport, Timeout: 30 * time.Second}
		if old != nil {
			defer old.transport.CloseIdleConnections()
		}
	}
	st.providers = make(map[string]target, len(cfg.Providers))
	for _, p := range cfg.Providers {
		t, _ := cfg.Target(p.Name)
		if o, ok := old.provider(p.Name); ok && o.ConnectTimeout == t.ConnectTimeout {
			st.providers[p.Name] = target{Target: t, transport: o.transport, client: o.client}
			continue
		}
		tr := NewTransport(config.Upstream{ConnectTimeout: config.Duration(t.ConnectTimeout)})
		st.providers[p.Name] = target{Target: t, transport: tr, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	}
	if old != nil {
		for name, o := range old.providers {
			if n, ok := st.providers[name]; !ok || n.transport != o.transport {
				defer o.transport.CloseIdleConnections()
			}
		}
	}
	if old != nil {
		s.router.Update(cfg)
	}
	s.state.Store(st)
}

// Close releases idle upstream connections.
func (s *Server) Close() {
	st := s.state.Load()
	st.transport.CloseIdleConnections()
	for _, t := range st.providers {
		t.transport.CloseIdleConnections()
	}
}

// target is one provider as an attempt needs it: its settings and its
// transport, and a client over that transport for short GETs (probes).
type target struct {
	config.Target
	transport *http.Transport
	client    *http.Client
}

// ClientFor returns the HTTP client of provider ("chutes", or a name no
// longer configured, is Chutes'): over the same transport as its chats, for
// probes of its model list.
func (s *Server) ClientFor(provider string) *http.Client {
	return s.state.Load().target(provider).client
}

// target returns provider name's target; "chutes" (or a name no longer
// configured, after a reload) is [upstream].
func (st *state) target(name string) target {
	if t, ok := st.provider(name); ok {
		return t
	}
	t, _ := st.cfg.Target(config.Chutes)
	return target{Target: t, transport: st.transport, client: st.client}
}

func (st *state) provider(name string) (target, bool) {
	if st == nil {
		return target{}, false
	}
	t, ok := st.providers[name]
	return t, ok
}

// endpoint kinds
const (
	epChat = iota + 1
	epCompletions
	epEmbeddings
	epModels
	epOther
)

// route maps a request path to an endpoint and the upstream path below
// base_url. The /v1 prefix is optional (some clients drop it), and a full
// endpoint pasted as a base URL ("/v1/chat/completions/chat/completions")
// counts as the endpoint it ends with.
func route(method, urlPath string) (ep int, upstreamPath string) {
	p := strings.TrimRight(urlPath, "/")
	switch {
	case method == http.MethodPost && (p == "" || p == "/v1"):
		// A base URL used as the endpoint (JanitorAI posts to the URL as
		// entered): a chat completion is what such apps send.
		return epChat, "/chat/completions"
	case strings.HasSuffix(p, "/chat/completions"):
		return epChat, "/chat/completions"
	case strings.HasSuffix(p, "/completions"):
		return epCompletions, "/completions"
	case strings.HasSuffix(p, "/embeddings"):
		return epEmbeddings, "/embeddings"
	case strings.HasSuffix(p, "/models") && (p == "/models" || strings.HasPrefix(p, "/v1/")):
		return epModels, "/models"
	case strings.HasPrefix(p, "/v1/"):
		// Forward only what stays under /v1/ once dot segments are
		// resolved: an upstream that resolves "/v1/../users/me" itself
		// would otherwise serve a path outside the API with the
		// configured key, and a proxy_key must buy chat, not the host.
		if c := path.Clean(p); strings.HasPrefix(c, "/v1/") {
			return epOther, c[3:]
		}
	}
	return 0, ""
}

// ServeHTTP runs each request through the steps below, each of which may
// answer it: the DNS-rebinding guard, CORS, the proxy's own pages, then
// the API routes behind proxy_key.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	rec := &recorder{ResponseWriter: w}
	info := &reqInfo{id: requestID(r)}
	rec.Header().Set("X-Request-Id", info.id)
	start := time.Now()
	defer func() { s.logRequest(r, rec, info, time.Since(start)) }()

	if st.loopback && !s.hostAllowed(st, r.Host) {
		s.writeError(rec, r, st, info, diagnose.HostNotAllowed(r.Host))
		return
	}
	if s.cors(rec, r, st, info) {
		return
	}
	if s.servePage(rec, r, st, info) {
		return
	}
	s.serveAPI(rec, r, st, info)
}

// cors sets the CORS headers for an allowed origin and answers preflights.
// A page on any other site may still send a "simple" request (text/plain,
// no preflight) to 127.0.0.1: the browser hides the answer, but the request
// would spend the user's key, so a request with an Origin that is neither
// allowed nor the proxy's own pages is refused. It reports whether it
// answered the request.
func (s *Server) cors(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo) bool {
	origin := r.Header.Get("Origin")
	allowed := origin != "" && st.origins[strings.ToLower(origin)]
	if allowed {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", "X-Request-Id, X-Chutes-Proxy-Model, X-Chutes-Proxy-Attempts, Retry-After")
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", req)
			} else {
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, OpenAI-Organization, OpenAI-Project, X-Stainless-Lang, X-Stainless-Package-Version, X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, X-Stainless-Retry-Count, X-Stainless-Timeout")
			}
			h.Set("Access-Control-Max-Age", "600")
			if r.Header.Get("Access-Control-Request-Private-Network") == "true" {
				h.Set("Access-Control-Allow-Private-Network", "true")
			}
		}
	}
	switch {
	case r.Method == http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return true
	case origin != "" && !allowed && !sameOrigin(origin, r.Host):
		s.writeError(w, r, st, info, diagnose.OriginNotAllowed(origin))
		return true
	}
	return false
}

// servePage answers /healthz and the pages (/, /status, /metrics). The
// pages (model states, key prefix, quota, balance) are for this machine, or
// for holders of the proxy_key when other machines can reach the proxy (a
// non-loopback listen, a tunnel named in allowed_hosts). It reports whether
// it answered the request.
func (s *Server) servePage(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo) bool {
	switch p := r.URL.Path; {
	case p == "/healthz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
		return true
	case s.pages == nil:
		return false
	case (p == "/" && r.Method != http.MethodPost) || p == "/status" || p == "/metrics":
		if !s.local(r) && !s.proxyKeyOK(st, r) {
			s.writeError(w, r, st, info, diagnose.InvalidProxyKey())
			return true
		}
		s.pages.ServeHTTP(w, r)
		return true
	}
	return false
}

// serveAPI routes the OpenAI API paths, behind proxy_key.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, st *state, info *reqInfo) {
	ep, upath := route(r.Method, r.URL.Path)
	var de *diagnose.Error
	switch {
	case ep == 0:
		de = diagnose.NotFound(r.URL.Path)
	case !s.proxyKeyOK(st, r):
		de = diagnose.InvalidProxyKey()
	case (ep == epChat || ep == epCompletions || ep == epEmbeddings) && r.Method != http.MethodPost:
		de = diagnose.MethodNotAllowed(r.Method, "POST")
	case ep == epModels && r.Method != http.MethodGet && r.Method != http.MethodHead:
		de = diagnose.MethodNotAllowed(r.Method, "GET")
	}
	if de != nil {
		s.writeError(w, r, st, info, de)
		return
	}
	switch ep {
	case epChat, epCompletions, epEmbeddings:
		info.endpoint = ep
		s.forward(w, r, st, info, upath)
	case epModels:
		s.models(w, r, st, info)
	default:
		s.passthrough(w, r, st, info, upath)
	}
}

// sameOrigin reports whether origin names the host the request was sent
// to (the status page calling /status).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, host)
}

// hostAllowed is the DNS-rebinding guard: a page on another site that gets
// its name to resolve to 127.0.0.1 still sends its own name as Host. An
// empty Host (HTTP/1.0) names no other site.
func (s *Server) hostAllowed(st *state, hostport string) bool {
	if hostport == "" || config.IsLoopback(hostport) {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return st.hosts[strings.ToLower(strings.Trim(host, "[]"))]
}

// local reports whether a request comes from this machine to a loopback
// name. A tunnel's requests come from a local process too, but carry the
// tunnel's name as Host.
func (s *Server) local(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback() && (r.Host == "" || config.IsLoopback(r.Host))
}

func (s *Server) proxyKeyOK(st *state, r *http.Request) bool {
	want := st.cfg.ProxyKey.Reveal()
	if want == "" {
		return true
	}
	return constantTimeEqual(bearer(r), want)
}

// reqInfo is what the log line of a request says besides status and size.
type reqInfo struct {
	id       string
	endpoint int
	model    string // requested
	served   string
	attempts int
	errCode  string
	stream   bool
}

func (s *Server) logRequest(r *http.Request, rec *recorder, info *reqInfo, d time.Duration) {
	if s.done != nil && info.endpoint != 0 {
		outcome := info.errCode
		if outcome == "" {
			outcome = "served"
		}
		s.done(info.served, outcome)
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs,
		slog.String("request_id", info.id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Int64("latency_ms", d.Milliseconds()),
		slog.Int64("bytes", rec.bytes),
	)
	if info.model != "" {
		attrs = append(attrs, slog.String("model", info.model), slog.String("served_by", info.served),
			slog.Int("attempts", info.attempts), slog.Bool("stream", info.stream))
	}
	if info.errCode != "" {
		attrs = append(attrs, slog.String("error", info.errCode))
	}
	level := slog.LevelInfo
	if r.URL.Path == "/healthz" || r.URL.Path == "/status" || r.URL.Path == "/metrics" {
		level = slog.LevelDebug
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

// requestID keeps a sane client-sent X-Request-Id, else makes one.
func requestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); v != "" && len(v) <= 64 && safeID(v) {
		return v
	}
	var b [16]byte
	return string(strconv.AppendUint(b[:0], rand.Uint64()|1<<63, 16))
}

func safeID(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// recorder notes the status and size of a response. It implements Unwrap so
// that http.ResponseController reaches the real writer's Flush.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush lets code that type-asserts http.Flusher flush too.
func (r *recorder) Flush() { _ = http.NewResponseController(r.ResponseWriter).Flush() }

// HTTPServer wraps h in an http.Server with time-outs that protect against
// slow clients without cutting long streams: headers must arrive within
// 10 s, a body within a minute; there is no WriteTimeout because a reasoning
// model can stream for many minutes.
func HTTPServer(addr string, h http.Handler, log *slog.Logger) *http.Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// Serve runs srv on ln until ctx is done, then stops accepting and lets
// in-flight requests and streams finish for up to drain.
func Serve(ctx context.Context, srv *http.Server, ln net.Listener, drain time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc
	if errors.Is(err, context.DeadlineExceeded) {
		_ = srv.Close()
		return errors.New("drain time-out: some requests were cut")
	}
	return err
}

// upstreamURL joins base_url, the endpoint path and the client's query.
func upstreamURL(base, path string, u *url.URL) string {
	if u.RawQuery == "" {
		return base + path
	}
	return base + path + "?" + u.RawQuery
}
