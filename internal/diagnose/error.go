// Package diagnose turns failures into the OpenAI-shaped errors a chat UI
// shows as text: one or two plain sentences that name the fix. It is the only
// place that writes those messages; the proxy only serialises them.
package diagnose

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// Codes of the contract's error table, plus the proxy's own extensions.
const (
	CodeMissingKey        = "missing_api_key"
	CodeInvalidKey        = "invalid_api_key"
	CodePaymentRequired   = "payment_required"
	CodeRateLimited       = "rate_limit_exceeded"
	CodeLocalRateLimit    = "local_rate_limit"
	CodeQuotaExhausted    = "daily_quota_exhausted"
	CodeAllUnavailable    = "all_models_unavailable"
	CodeModelNotFound     = "model_not_found"
	CodeInvalidJSON       = "invalid_json"
	CodeMissingModel      = "missing_model"
	CodeBodyTooLarge      = "body_too_large"
	CodeInvalidProxyKey   = "invalid_proxy_key"
	CodeStreamInterrupted = "stream_interrupted"
	// Extensions.
	CodeHostNotAllowed   = "host_not_allowed"
	CodeOriginNotAllowed = "origin_not_allowed"
	CodeUpstreamRejected = "upstream_rejected"
	CodeUpstreamNotAPI   = "upstream_not_api"
	CodeTimeout          = "request_timeout"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
)

// Error is an OpenAI-shaped error response.
type Error struct {
	Status   int
	Code     string
	Type     string
	Message  string
	Param    *string
	Attempts []failover.Attempt
	// RetryAfter, when set, becomes the Retry-After header (whole seconds,
	// rounded up).
	RetryAfter time.Duration
	// Raw, when set, is an upstream's OpenAI-shaped body to pass through
	// unchanged instead of our own.
	Raw []byte
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

type body struct {
	Error errorJSON `json:"error"`
}

type errorJSON struct {
	Message  string             `json:"message"`
	Type     string             `json:"type"`
	Code     string             `json:"code"`
	Param    *string            `json:"param"`
	Attempts []failover.Attempt `json:"attempts,omitempty"`
}

// JSON is the response body.
func (e *Error) JSON() []byte {
	if e.Raw != nil {
		return e.Raw
	}
	b, _ := json.Marshal(body{errorJSON{e.Message, e.Type, e.Code, e.Param, e.Attempts}})
	return b
}

// RetryAfterHeader is the Retry-After value, "" when none applies.
func (e *Error) RetryAfterHeader() string {
	if e.RetryAfter <= 0 {
		return ""
	}
	s := int64((e.RetryAfter + time.Second - 1) / time.Second)
	return strconv.FormatInt(s, 10)
}

func newError(status int, code, msg string) *Error {
	return &Error{Status: status, Code: code, Type: typeFor(status), Message: msg}
}

func typeFor(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "insufficient_quota"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	}
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}
