package health

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// Key states, for Account.KeyState and /status key.state.
const (
	// KeyAccepted: the account API answered for the key.
	KeyAccepted = "accepted"
	// KeyRejected: the account API answered 401 or 403.
	KeyRejected = "rejected"
	// KeyUnknown: the account API could not be asked (network error, 5xx).
	KeyUnknown = "unknown"
)

// Paths of Chutes' account API (https://api.chutes.ai), which answers per
// key, for free, with Authorization: Bearer <key>.
const (
	// QuotaUsagePath answers {"quota": 300, "used": 15, "chute_id": "*"}:
	// today's requests of the key's default quota (reset 00:00 UTC);
	// quota 0 means unlimited.
	QuotaUsagePath = "/users/me/quota_usage/me"
	// UserPath answers the user, including "balance" in USD.
	UserPath = "/users/me"
)

// accountTimeout bounds one account check (both calls).
const accountTimeout = 15 * time.Second

// Account is what Chutes' account API said about the key. Fields the API
// did not send stay unknown (the Has flags are false).
type Account struct {
	// CheckedAt is when the check ran.
	CheckedAt time.Time `json:"checked_at"`
	// KeyState is KeyAccepted, KeyRejected or KeyUnknown.
	KeyState string `json:"key_state"`
	// Status is the HTTP status of the call that failed, 0 when none did or
	// no answer came.
	Status int `json:"status,omitempty"`
	// Error says why the check failed or the key was rejected.
	Error string `json:"error,omitempty"`

	// HasQuota is true when quota_usage answered with numbers.
	HasQuota bool `json:"-"`
	// QuotaLimit is the daily request quota; 0 means unlimited.
	QuotaLimit float64 `json:"-"`
	// QuotaUsed is today's requests as Chutes counts them (it lags).
	QuotaUsed float64 `json:"-"`
	// ChuteID is what the quota applies to ("*": every chute).
	ChuteID string `json:"-"`

	// HasBalance is true when users/me answered with a balance.
	HasBalance bool `json:"-"`
	// Balance is the account balance in USD.
	Balance float64 `json:"-"`
}

// Rejected reports whether Chutes refused the key.
func (a Account) Rejected() bool { return a.KeyState == KeyRejected }

// QuotaExhausted reports whether Chutes' daily quota is used up; own is the
// proxy's own count today, taken when larger because Chutes' lags.
func (a Account) QuotaExhausted(own int) bool {
	return a.HasQuota && a.QuotaLimit > 0 && math.Max(a.QuotaUsed, float64(own)) >= a.QuotaLimit
}

// Summary says what is known in one phrase, "" when nothing is: "212 of 300
// requests used today (resets at 00:00 UTC, in 5h12m); balance $10.50".
// own is the proxy's own count today (0 when unknown); the larger count is
// shown.
func (a Account) Summary(own int, now time.Time) string {
	var parts []string
	if a.HasQuota {
		used := int(math.Round(math.Max(a.QuotaUsed, float64(own))))
		reset := "resets at 00:00 UTC, in " + shortDur(diagnose.NextUTCMidnight(now).Sub(now))
		switch {
		case a.QuotaLimit <= 0:
			parts = append(parts, fmt.Sprintf("%d requests used today (no daily quota)", used))
		case float64(used) >= a.QuotaLimit:
			parts = append(parts, fmt.Sprintf("%d of %.0f requests used today: the daily quota is used up (%s)", used, a.QuotaLimit, reset))
		default:
			parts = append(parts, fmt.Sprintf("%d of %.0f requests used today (%s)", used, a.QuotaLimit, reset))
		}
	}
	if a.HasBalance {
		b := fmt.Sprintf("balance $%.2f", a.Balance)
		if a.Balance <= 0 {
			b += " (no pay-as-you-go credit)"
		}
		parts = append(parts, b)
	}
	return strings.Join(parts, "; ")
}

// CheckAccount asks Chutes' account API at accountURL (e.g.
// https://api.chutes.ai) about key: today's quota use and the balance. A
// 401 or 403 means the key is rejected, which is known before any chat
// fails. It costs no request of the quota. The key is sent only in the
// Authorization header and appears in nothing returned.
func CheckAccount(ctx context.Context, client *http.Client, accountURL, key string) Account {
	ctx, cancel := context.WithTimeout(ctx, accountTimeout)
	defer cancel()
	base := strings.TrimRight(accountURL, "/")
	a := Account{CheckedAt: time.Now(), KeyState: KeyUnknown}
	if client == nil {
		client = http.DefaultClient
	}

	body, status, err := getJSON(ctx, client, base+QuotaUsagePath, key)
	if a.reject(status, body) {
		return a
	}
	var problems []string
	switch {
	case err != nil:
		problems = append(problems, err.Error())
	case status == http.StatusOK:
		a.KeyState = KeyAccepted
		if q, err := ParseQuotaUsage(body); err == nil {
			a.HasQuota, a.QuotaLimit, a.QuotaUsed, a.ChuteID = true, q.Limit, q.Used, q.ChuteID
		} else {
			problems = append(problems, "quota usage: "+err.Error())
		}
	default:
		a.Status = status
		problems = append(problems, fmt.Sprintf("GET %s answered %d", QuotaUsagePath, status))
	}

	body, status, err = getJSON(ctx, client, base+UserPath, key)
	if a.reject(status, body) {
		return a
	}
	switch {
	case err != nil:
		problems = append(problems, err.Error())
	case status == http.StatusOK:
		a.KeyState = KeyAccepted
		if b, ok, err := ParseBalance(body); err != nil {
			problems = append(problems, "user: "+err.Error())
		} else if ok {
			a.HasBalance, a.Balance = true, b
		}
	default:
		if a.Status == 0 {
			a.Status = status
		}
		problems = append(problems, fmt.Sprintf("GET %s answered %d", UserPath, status))
	}
	if a.KeyState != KeyAccepted || !a.HasQuota && !a.HasBalance {
		a.Error = "Chutes' account API (" + base + "): " + strings.Join(problems, "; ")
	}
	return a
}

// reject marks the key rejected on 401, or on 403 unless the other call
// accepted it (then 403 only means that endpoint is not for this key), and
// reports whether it did. What the other call said is dropped: nothing of a
// rejected key is shown.
func (a *Account) reject(status int, body []byte) bool {
	if status != http.StatusUnauthorized && (status != http.StatusForbidden || a.KeyState == KeyAccepted) {
		return false
	}
	*a = Account{CheckedAt: a.CheckedAt, KeyState: KeyRejected, Status: status}
	a.Error = "the account API answered " + strconv.Itoa(status)
	if r := failover.ReasonFromBody(body); r != "" {
		a.Error += ": " + r
	}
	return true
}

// getJSON GETs url with the key; the body is bounded.
func getJSON(ctx context.Context, client *http.Client, url, key string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, &requestError{fmt.Sprintf("GET %s: no answer within %s", url, accountTimeout), err}
		}
		return nil, 0, &requestError{fmt.Sprintf("GET %s: %s", url, failover.Describe(err)), err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("reading %s: %w", url, err)
	}
	return b, resp.StatusCode, nil
}

// requestError says a request failed in words for people, and keeps the
// cause for errors.Is and errors.As.
type requestError struct {
	msg string
	err error
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.err }

// StatusError is an answer other than 200 from the account API.
type StatusError struct {
	// Path is the path asked, e.g. QuotaUsagePath.
	Path string
	// Status is the HTTP status.
	Status int
	// Reason is the API's own words ({"detail": ...}), "" when it gave none.
	Reason string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("GET %s answered %d", e.Path, e.Status)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Rejected reports whether the answer (401 or 403) means the key is not
// accepted.
func (e *StatusError) Rejected() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Get asks one path of Chutes' account API at accountURL (e.g.
// QuotaUsagePath) with key, for callers that read the answer themselves
// (with ParseQuotaUsage, QuotaLimit, ParseBalance). An answer other than
// 200 is a *StatusError; a failed request's error wraps its cause (a
// *url.Error). Only ctx bounds it; the key goes only in the Authorization
// header.
func Get(ctx context.Context, client *http.Client, accountURL, path, key string) ([]byte, error) {
	if client == nil {
		client = http.DefaultClient
	}
	body, status, err := getJSON(ctx, client, strings.TrimRight(accountURL, "/")+path, key)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &StatusError{Path: path, Status: status, Reason: failover.ReasonFromBody(body)}
	}
	return body, nil
}

// ErrNoQuota is ParseQuotaUsage's error for a JSON object that has neither
// the quota nor the use as a number.
var ErrNoQuota = errors.New(`no "quota" or "used" number in the answer`)

// QuotaUsage is GET /users/me/quota_usage/me.
type QuotaUsage struct {
	// Limit is the daily quota, 0 for unlimited (or not sent).
	Limit float64
	// Used is today's requests.
	Used float64
	// ChuteID is "*" for the account-wide quota.
	ChuteID string
}

// ParseQuotaUsage reads {"quota": 300, "used": 15, "chute_id": "*"}
// leniently: numbers may be integers, floats or numeric strings, "limit"
// stands in for "quota", a {"data": {...}} wrapper is unwrapped, and missing
// fields are zero. It fails only when the body is not a JSON object or has
// neither number.
func ParseQuotaUsage(body []byte) (QuotaUsage, error) {
	obj, err := object(body)
	if err != nil {
		return QuotaUsage{}, err
	}
	if _, ok := firstNumber(obj, "quota", "limit", "used"); !ok {
		if inner, ok := obj["data"].(map[string]any); ok {
			obj = inner
		}
	}
	var q QuotaUsage
	limit, okL := firstNumber(obj, "quota", "limit")
	used, okU := firstNumber(obj, "used", "usage", "count")
	if !okL && !okU {
		return QuotaUsage{}, ErrNoQuota
	}
	q.Limit, q.Used = max(limit, 0), max(used, 0)
	if s, ok := obj["chute_id"].(string); ok {
		q.ChuteID = s
	}
	return q, nil
}

// QuotaLimit reads how a quota_usage answer states the limit, which
// QuotaUsage folds into Limit 0: set is true when the answer sends one
// ("quota" or "limit", at the top level or under "data"), as a number or as
// "unlimited"; unlimited is true when it is "unlimited" or 0. limit is the
// number sent, clamped at 0.
func QuotaLimit(body []byte) (limit float64, unlimited, set bool) {
	obj, err := object(body)
	if err != nil {
		return 0, false, false
	}
	if _, ok := firstNumber(obj, "quota", "limit", "used"); !ok {
		if inner, ok := obj["data"].(map[string]any); ok {
			obj = inner
		}
	}
	for _, k := range []string{"quota", "limit"} {
		if n, ok := number(obj[k]); ok {
			return max(n, 0), n == 0, true
		}
		if s, ok := obj[k].(string); ok && strings.EqualFold(strings.TrimSpace(s), "unlimited") {
			return 0, true, true
		}
	}
	return 0, false, false
}

// ParseBalance reads "balance" from GET /users/me leniently (a number or a
// numeric string such as "$10.50", at the top level or under "data"); ok is
// false when the answer has none.
func ParseBalance(body []byte) (balance float64, ok bool, err error) {
	obj, err := object(body)
	if err != nil {
		return 0, false, err
	}
	if b, ok := firstNumber(obj, "balance"); ok {
		return b, true, nil
	}
	if inner, isObj := obj["data"].(map[string]any); isObj {
		if b, ok := firstNumber(inner, "balance"); ok {
			return b, true, nil
		}
	}
	return 0, false, nil
}

func object(body []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil || obj == nil {
		return nil, errors.New("the answer is not a JSON object")
	}
	return obj, nil
}

// firstNumber returns the first of keys whose value reads as a number.
func firstNumber(obj map[string]any, keys ...string) (float64, bool) {
	for _, k := range keys {
		if v, ok := number(obj[k]); ok {
			return v, true
		}
	}
	return 0, false
}

func number(v any) (float64, bool) {
	var f float64
	var err error
	switch x := v.(type) {
	case json.Number:
		f, err = x.Float64()
	case float64:
		f = x
	case string:
		s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(x), "$"))
		f, err = strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	default:
		return 0, false
	}
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// shortDur renders a wait as "5h12m", "12m" or "40s".
func shortDur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(max(d.Seconds(), 1))) + "s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
