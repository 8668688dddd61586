package failover

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// Action is what the chain walk does after an attempt failed.
type Action int

const (
	// Next tries the next model of the chain: the failure says this model
	// cannot serve now (down, overloaded, unknown to this chute, timed out).
	Next Action = iota
	// Return stops the walk and answers the client with this failure: it is
	// about the request or the account (bad key, no balance, bad request), so
	// every other model would refuse it too.
	Return
	// Stop stops the walk without an answer: the client went away.
	Stop
	// SkipProvider skips the rest of this model's provider: it refused the
	// key or wants payment (401, 402, 403), so its other models would too,
	// but another provider, with its own key, may serve. When nothing
	// serves, this failure is the answer: it outranks "unavailable".
	SkipProvider
)

func (a Action) String() string {
	switch a {
	case Next:
		return "next"
	case Return:
		return "return"
	case SkipProvider:
		return "skip_provider"
	default:
		return "stop"
	}
}

// UpstreamError is an upstream answer with a non-2xx status, with the start
// of its body (at most a few KiB, enough for a diagnosis).
type UpstreamError struct {
	Status      int
	Body        []byte
	ContentType string
	// Provider names who answered ("" or "chutes" for Chutes).
	Provider string
	// RetryAfter is the upstream's Retry-After, 0 when absent or unreadable.
	RetryAfter time.Duration
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("upstream answered %d: %s", e.Status, e.Reason())
}

// Reason is the upstream's own words, shortened for a log line or the
// attempts array: FastAPI's {"detail": "..."} or {"detail": {"message": ...}},
// OpenAI's {"error": {"message": ...}}, else the status text.
func (e *UpstreamError) Reason() string {
	if r := ReasonFromBody(e.Body); r != "" {
		return r
	}
	if LooksLikeHTML(e.Body) {
		return "an HTML page, not the API"
	}
	if t := http.StatusText(e.Status); t != "" {
		return strings.ToLower(t)
	}
	return "status " + strconv.Itoa(e.Status)
}

// NotAPIError is a 2xx answer that is not the API's: an HTML page or other
// garbage where JSON or SSE belongs. One model's miner can do this; every
// model doing it means base_url points somewhere else.
type NotAPIError struct {
	Status      int
	ContentType string
	Sample      string
}

func (e *NotAPIError) Error() string {
	return fmt.Sprintf("upstream answered %d with %s, not the API", e.Status, describeContentType(e.ContentType))
}

// StreamError is an error the upstream sent as the first event of a stream
// (Chutes' bare `{"error": ...}` line or `data: {"error": ...}`): that model
// failed before producing a token.
type StreamError struct {
	Reason string
}

func (e *StreamError) Error() string { return "stream began with an error: " + e.Reason }

// TimeoutError is an attempt that produced no first token within
// first_byte_timeout, or (Idle) stalled between tokens for idle_timeout
// before its reply was whole.
type TimeoutError struct {
	After time.Duration
	Idle  bool
	// Learned: After was the model's learned cut-off, shorter than
	// first_byte_timeout.
	Learned bool
}

func (e *TimeoutError) Error() string {
	switch {
	case e.Idle:
		return "no token for " + human.Duration(e.After) + " mid-reply (idle_timeout)"
	case e.Learned:
		return "no token after " + human.Duration(e.After) + " (the model's learned cut-off, from its recent replies)"
	}
	return "no token after " + human.Duration(e.After) + " (first_byte_timeout)"
}

// Timeout marks it as a net.Error-style time-out.
func (e *TimeoutError) Timeout() bool { return true }

// Classify decides what a failed attempt means for the walk and whether it
// counts against the model's breaker. It is the one place that knows the
// failover table of the contract: connection and TLS errors, time-outs before
// the first byte, 404, 429, 500, 502, 503 and 504 move on; 400, 401, 402, 403,
// 413 and 422 (and any other 4xx) go back to the client at once.
func Classify(err error) (a Action, countsAsFailure bool) {
	var ue *UpstreamError
	switch {
	case err == nil:
		return Return, false
	case errors.Is(err, context.Canceled):
		return Stop, false
	case errors.As(err, &ue):
		switch ue.Status {
		case http.StatusUnauthorized, http.StatusPaymentRequired, http.StatusForbidden:
			return SkipProvider, false
		case http.StatusNotFound, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return Next, true
		}
		if ue.Status >= 500 {
			// Other 5xx (Cloudflare's 52x, 501...) say nothing about the
			// request either.
			return Next, true
		}
		return Return, false
	case IsNetwork(err) && isDNS(err):
		// The host's name did not resolve: the network's fault, the same
		// for every model, so no breaker should remember it.
		return Next, false
	default:
		// time-outs, connection refused/reset, TLS, a miner's error event
		// or garbage: this model could not serve.
		return Next, true
	}
}

// IsNetwork reports whether err is a failure to reach the upstream host at
// all (DNS, TCP connect, TLS handshake) rather than an answer from it.
func IsNetwork(err error) bool {
	var (
		dns *net.DNSError
		op  *net.OpError
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &dns), errors.As(err, &cve), errors.As(err, &rhe):
		return true
	case errors.As(err, &op):
		return op.Op == "dial"
	}
	return strings.Contains(err.Error(), "tls: ")
}

// IsTimeout reports whether err is a time-out of any layer: a context
// deadline, a socket deadline, or a net.Error that says so (url.Error
// included).
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}

func isDNS(err error) bool {
	var dns *net.DNSError
	return errors.As(err, &dns)
}

// Describe is the short reason shown in attempts[].reason and logs.
func Describe(err error) string {
	var (
		ue  *UpstreamError
		te  *TimeoutError
		na  *NotAPIError
		se  *StreamError
		dns *net.DNSError
		op  *net.OpError
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &ue):
		return ue.Reason()
	case errors.As(err, &te):
		return te.Error()
	case errors.As(err, &na):
		return na.Error()
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return "request_timeout reached"
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "DNS: host " + dns.Name + " not found"
		}
		return "DNS lookup of " + dns.Name + " failed: " + dns.Err
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return "TLS certificate not trusted: " + err.Error()
	case errors.As(err, &op):
		if op.Op == "dial" {
			return "connection failed: " + op.Err.Error()
		}
		if strings.Contains(op.Err.Error(), "reset") {
			return "connection reset by the upstream"
		}
		return "connection error: " + op.Err.Error()
	case strings.Contains(err.Error(), "tls:"):
		return "TLS error: " + err.Error()
	}
	return err.Error()
}

// ParseRetryAfter reads a Retry-After value in either form (seconds or an
// HTTP date); garbage and past dates give 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if !(n > 0 && n <= 86400) { // NaN fails this too
			return 0
		}
		return time.Duration(n * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 && d <= 24*time.Hour {
			return d
		}
	}
	return 0
}

// LooksLikeHTML reports whether a body is a web page rather than the API's
// JSON or SSE: the sign of a wrong base_url or a broken miner.
func LooksLikeHTML(b []byte) bool {
	s := strings.TrimSpace(string(b[:min(len(b), 512)]))
	return strings.HasPrefix(s, "<")
}

func describeContentType(ct string) string {
	switch {
	case ct == "":
		return "a body of unknown type"
	case strings.HasPrefix(ct, "text/html"):
		return "an HTML page"
	}
	return "a " + ct + " body"
}

func trimFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
