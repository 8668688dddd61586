package health

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// maxBackoff is the longest wait between probes while the upstream is
// unreachable (unless probe_interval itself is longer).
const maxBackoff = 5 * time.Minute

// probeTimeout bounds one probe.
const probeTimeout = 20 * time.Second

// Steps a probe can fail at, for Reachability.FailedStep.
const (
	StepDNS      = "dns"
	StepConnect  = "connect"
	StepTLS      = "tls"
	StepHTTP     = "http"     // an answer, but not 200
	StepResponse = "response" // 200, but not a model list
	StepTimeout  = "timeout"
	StepOther    = "other"
)

// Reachability is one probe of GET {base_url}/models. Step timings are
// null when the step did not happen (an IP literal needs no DNS; plain HTTP
// has no TLS) or failed.
type Reachability struct {
	// Checked is when the probe started.
	Checked time.Time `json:"checked_at"`
	// URL is what was fetched.
	URL string `json:"url"`
	// FailedStep is "" when the probe succeeded, else one of the Step
	// constants.
	FailedStep string `json:"failed_step,omitempty"`
	// Error says what went wrong, "" on success.
	Error string `json:"error,omitempty"`
	// Status is the HTTP status, 0 when no answer came.
	Status int `json:"status,omitempty"`
	// LatencyMS is the whole probe, list download included.
	LatencyMS int64  `json:"latency_ms"`
	DNSMS     *int64 `json:"dns_ms"`
	ConnectMS *int64 `json:"connect_ms"`
	TLSMS     *int64 `json:"tls_ms"`
	// TTFBMS is the time from sending the request to the first byte of the
	// answer.
	TTFBMS *int64 `json:"ttfb_ms"`
	// Models is how many models the list holds.
	Models int `json:"models_listed"`
	// Failures counts consecutive failed probes (the backoff's exponent).
	Failures int `json:"consecutive_failures"`
	// Next is when the next probe is due; zero when none is scheduled.
	Next time.Time `json:"next_probe,omitzero"`
}

// OK reports whether the upstream answered with a model list.
func (r Reachability) OK() bool { return r.FailedStep == "" && !r.Checked.IsZero() }

// Probe fetches {base}/models once with client's transport settings into
// cat (nil: into a throwaway catalog, as doctor may), timing DNS, connect,
// TLS and the first byte with httptrace. It opens a fresh connection, so
// that every step is measured and the proxy's pooled connections are left
// alone. It never sends a completion. key may be "".
func Probe(ctx context.Context, client *http.Client, cat *catalog.Catalog, base, key string) Reachability {
	base = strings.TrimRight(base, "/")
	start := time.Now()
	r := Reachability{Checked: start, URL: base + "/models"}
	if cat == nil {
		cat = catalog.New()
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()

	var (
		mu                                 sync.Mutex
		dnsStart, connStart, tlsStart, wro time.Time
		dnsErr, connErr, tlsErr            error
	)
	ms := func(d time.Duration) *int64 { v := d.Milliseconds(); return &v }
	trace := &httptrace.ClientTrace{
		DNSStart: func(httptrace.DNSStartInfo) { mu.Lock(); dnsStart = time.Now(); mu.Unlock() },
		DNSDone: func(i httptrace.DNSDoneInfo) {
			mu.Lock()
			defer mu.Unlock()
			if i.Err != nil {
				dnsErr = i.Err
				return
			}
			r.DNSMS = ms(time.Since(dnsStart))
		},
		ConnectStart: func(string, string) {
			mu.Lock()
			if connStart.IsZero() {
				connStart = time.Now()
			}
			mu.Unlock()
		},
		ConnectDone: func(_, _ string, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				connErr = err // another address may still succeed
				return
			}
			connErr = nil
			r.ConnectMS = ms(time.Since(connStart))
		},
		TLSHandshakeStart: func() { mu.Lock(); tlsStart = time.Now(); mu.Unlock() },
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				tlsErr = err
				return
			}
			r.TLSMS = ms(time.Since(tlsStart))
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { mu.Lock(); wro = time.Now(); mu.Unlock() },
		GotFirstResponseByte: func() { mu.Lock(); r.TTFBMS = ms(time.Since(wro)); mu.Unlock() },
	}
	rec := &statusRecorder{}
	c, closeIdle := probeClient(client, rec)
	defer closeIdle()
	err := cat.Fetch(httptrace.WithClientTrace(ctx, trace), c, base, key)
	r.LatencyMS = time.Since(start).Milliseconds()

	mu.Lock()
	defer mu.Unlock()
	r.Status = rec.get()
	if n := len(cat.IDs()); err == nil {
		r.Models = n
		return r
	}
	r.Error = failover.Describe(err)
	var dns *net.DNSError
	switch {
	case dnsErr != nil || errors.As(err, &dns):
		r.FailedStep = StepDNS
	case tlsErr != nil:
		r.FailedStep, r.TLSMS = StepTLS, nil
	case r.Status != 0 && r.Status != http.StatusOK:
		r.FailedStep = StepHTTP
		r.Error = "GET " + r.URL + " answered " + strconv.Itoa(r.Status) + " " + http.StatusText(r.Status)
	case r.Status == http.StatusOK:
		r.FailedStep = StepResponse
		r.Error = "GET " + r.URL + " did not return a model list (" + err.Error() + "): base_url looks wrong"
	case connErr != nil || r.ConnectMS == nil && isDial(err):
		r.FailedStep = StepConnect
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		r.FailedStep = StepTimeout
		r.Error = "no answer within " + probeTimeout.String()
	default:
		r.FailedStep = StepOther
	}
	return r
}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func isTimeout(err error) bool {
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.As(err, &ue) && ue.Timeout()
}

// statusRecorder notes the status of the probe's answer, which
// catalog.Fetch only reports inside an error message.
type statusRecorder struct {
	mu     sync.Mutex
	status int
	base   http.RoundTripper
}

func (s *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.base.RoundTrip(req)
	if resp != nil {
		s.mu.Lock()
		s.status = resp.StatusCode
		s.mu.Unlock()
	}
	return resp, err
}

func (s *statusRecorder) get() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// probeClient is client over a copy of its transport that keeps no
// connection: same resolver, proxy and TLS settings, fresh connection.
func probeClient(client *http.Client, rec *statusRecorder) (*http.Client, func()) {
	if client == nil {
		client = http.DefaultClient
	}
	c := *client
	rt := client.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	closeIdle := func() {}
	if t, ok := rt.(*http.Transport); ok {
		t = t.Clone()
		t.DisableKeepAlives = true
		rt, closeIdle = t, t.CloseIdleConnections
	}
	rec.base = rt
	c.Transport = rec
	return &c, closeIdle
}

// nextDelay is the wait before the next probe: every, doubled per
// consecutive failure up to maxBackoff (or every, if that is longer),
// times j (a jitter factor around 1) so that many proxies do not probe in
// step.
func nextDelay(every time.Duration, failures int, j float64) time.Duration {
	d := every
	if failures > 0 {
		ceiling := max(every, maxBackoff)
		for range min(failures, 20) {
			d *= 2
			if d >= ceiling {
				d = ceiling
				break
			}
		}
	}
	return time.Duration(float64(d) * j)
}

// jitter is a factor in [0.9, 1.1).
func jitter() float64 { return 0.9 + 0.2*rand.Float64() }
