package chutes

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// probeTimeout bounds one probe; a caller's shorter deadline wins.
const probeTimeout = 20 * time.Second

// Steps a probe can fail at, for Reachability.FailedStep.
const (
	StepDNS     = "dns"
	StepConnect = "connect"
	StepTLS     = "tls"
	// StepHTTP: the API answered with an error status (429, 5xx, 401 ...).
	StepHTTP = "http"
	// StepResponse: an answer, but not the API's: a 200 that is not a model
	// list, a 404 (an OpenAI-style API always serves /models) or a web page
	// with a 4xx. base_url looks wrong.
	StepResponse = "response"
	StepTimeout  = "timeout"
	StepOther    = "other"
)

// Reachability is one probe of GET {base_url}/models. Step timings are null
// when the step did not happen (an IP literal needs no DNS; plain HTTP has
// no TLS) or failed.
type Reachability struct {
	// Checked is when the probe started.
	Checked time.Time `json:"checked_at"`
	URL     string    `json:"url"`
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
	// Reason is the upstream's own words with an error status ("Invalid
	// token"), and Body its answer (the first 64 KiB), for a caller that
	// explains it (doctor); "" and nil otherwise.
	Reason string `json:"-"`
	Body   []byte `json:"-"`
	// Err is what ended the probe without a whole answer, for a caller
	// that explains it (doctor); nil when an answer came.
	Err error `json:"-"`
	// TLS is the handshake's outcome, nil when none succeeded.
	TLS *tls.ConnectionState `json:"-"`
}

// OK reports whether the upstream answered with a model list.
func (r Reachability) OK() bool { return r.FailedStep == "" && !r.Checked.IsZero() }

// Probe fetches {t.BaseURL}/models once with client's transport settings
// and returns what happened and, on success, the list. It times DNS,
// connect, TLS and the first byte over a fresh connection, so that every
// step is measured and client's pooled connections are left alone. It
// never sends a completion. It sends t.Key as a Bearer token, none when
// t.Key is "" (Chutes serves the list to anyone; a local server wants no
// key), and t.Headers (a provider's own, such as OpenRouter's
// HTTP-Referer): t is one provider's, so no other provider's key goes along.
func Probe(ctx context.Context, client *http.Client, t config.Target) (Reachability, []catalog.Entry) {
	start := time.Now()
	r := Reachability{Checked: start, URL: strings.TrimRight(t.BaseURL, "/") + "/models"}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var tr tracer
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, tr.trace()), http.MethodGet, r.URL, nil)
	if err != nil {
		r.FailedStep, r.Error = StepOther, err.Error()
		return r, nil
	}
	if key := t.Key.Reveal(); key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	c, closeIdle := fresh(client)
	defer closeIdle()
	var body []byte
	resp, err := c.Do(req)
	if err == nil {
		r.Status = resp.StatusCode
		body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
	}
	r.LatencyMS = time.Since(start).Milliseconds()

	tr.mu.Lock()
	defer tr.mu.Unlock()
	r.DNSMS, r.ConnectMS, r.TLSMS, r.TTFBMS, r.TLS, r.Err = tr.dns, tr.connect, tr.tls, tr.ttfb, tr.state, err
	var op *net.OpError
	switch {
	case err == nil && r.Status == http.StatusOK:
		entries, perr := catalog.Parse(body)
		if perr == nil {
			r.Models = len(entries)
			return r, entries
		}
		seen := perr.Error()
		if failover.LooksLikeHTML(body) {
			seen = "an HTML page"
		}
		r.FailedStep, r.Error = StepResponse, "GET "+r.URL+" answered 200 with "+seen+", not a model list"
	case err == nil:
		ue := &failover.UpstreamError{Status: r.Status, Body: body}
		r.Reason, r.Body = ue.Reason(), body[:min(len(body), 64<<10)]
		r.FailedStep, r.Error = StepHTTP, "GET "+r.URL+" answered "+strconv.Itoa(r.Status)+": "+r.Reason
		if r.Status == http.StatusNotFound || r.Status < 500 && r.Status != http.StatusTooManyRequests && failover.LooksLikeHTML(body) {
			r.FailedStep = StepResponse
		}
	case tr.dnsErr != nil || errors.As(err, new(*net.DNSError)):
		r.FailedStep, r.Error = StepDNS, failover.Describe(err)
	case tr.tlsErr != nil:
		r.FailedStep, r.Error = StepTLS, failover.Describe(err)
	case tr.connErr != nil || r.ConnectMS == nil && errors.As(err, &op) && op.Op == "dial":
		r.FailedStep, r.Error = StepConnect, failover.Describe(err)
	case failover.IsTimeout(err):
		r.FailedStep, r.Error = StepTimeout, "GET "+r.URL+": no answer within "+human.Duration(time.Since(start).Round(time.Second))
	default:
		r.FailedStep, r.Error = StepOther, failover.Describe(err)
	}
	return r, nil
}

// tracer times a probe's steps and notes which failed; its hooks may run on
// other goroutines.
type tracer struct {
	mu                                 sync.Mutex
	dnsStart, connStart, tlsStart, wro time.Time
	dns, connect, tls, ttfb            *int64
	dnsErr, connErr, tlsErr            error
	state                              *tls.ConnectionState
}

func (t *tracer) trace() *httptrace.ClientTrace {
	// begin notes when a step first started.
	begin := func(at *time.Time) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if at.IsZero() {
			*at = time.Now()
		}
	}
	// done notes a step's outcome: its time since start, or its error. A
	// later success wins: another address may still connect.
	done := func(start *time.Time, ms **int64, errp *error, err error) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if *errp = err; err == nil {
			*ms = new(time.Since(*start).Milliseconds())
		}
	}
	return &httptrace.ClientTrace{
		DNSStart:          func(httptrace.DNSStartInfo) { begin(&t.dnsStart) },
		DNSDone:           func(i httptrace.DNSDoneInfo) { done(&t.dnsStart, &t.dns, &t.dnsErr, i.Err) },
		ConnectStart:      func(string, string) { begin(&t.connStart) },
		ConnectDone:       func(_, _ string, err error) { done(&t.connStart, &t.connect, &t.connErr, err) },
		TLSHandshakeStart: func() { begin(&t.tlsStart) },
		TLSHandshakeDone: func(cs tls.ConnectionState, err error) {
			done(&t.tlsStart, &t.tls, &t.tlsErr, err)
			if err == nil {
				t.mu.Lock()
				t.state = &cs
				t.mu.Unlock()
			}
		},
		WroteRequest:         func(httptrace.WroteRequestInfo) { begin(&t.wro) },
		GotFirstResponseByte: func() { done(&t.wro, &t.ttfb, new(error), nil) },
	}
}

// fresh is client over a copy of its transport that keeps no connection:
// same resolver, proxy and TLS settings, a new connection for the probe.
func fresh(client *http.Client) (*http.Client, func()) {
	c := *client
	t, ok := cmp.Or(c.Transport, http.DefaultTransport).(*http.Transport)
	if !ok {
		return &c, func() {}
	}
	t = t.Clone()
	t.DisableKeepAlives = true
	c.Transport = t
	return &c, t.CloseIdleConnections
}
