// Package chutes asks Chutes what it tells for free, without spending a
// request of the daily quota: whether its API answers with a model list
// (Probe), and what its account API says about a key (CheckAccount). health
// asks both in the background, doctor once, each through the client it is
// given, so that the answers come over the same resolver, proxy and TLS
// settings as its requests. Probe asks the other providers the same way,
// and LocalServer says which local model server to start when one is not
// running.
package chutes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// Key states, for Account.KeyState.
const (
	// KeyAccepted: the account API answered for the key.
	KeyAccepted = "accepted"
	// KeyRejected: the account API answered 401, or 403 to both calls.
	KeyRejected = "rejected"
	// KeyUnknown: the account API could not be asked (network error, 5xx).
	KeyUnknown = "unknown"
)

// Paths of Chutes' account API (https://api.chutes.ai), which answers per
// key, for free, with Authorization: Bearer <key>.
const (
	// quotaPath answers {"quota": 300, "used": 15, "chute_id": "*"}:
	// today's requests of the key's default quota.
	quotaPath = "/users/me/quota_usage/me"
	// userPath answers the user, including "balance" in USD.
	userPath = "/users/me"
)

// accountTimeout bounds one account check (both calls); a caller's shorter
// deadline wins.
const accountTimeout = 15 * time.Second

// Account is what Chutes' account API said about a key. What it did not say
// stays unknown (the Has flags are false).
type Account struct {
	// CheckedAt is when the check ran.
	CheckedAt time.Time
	// KeyState is KeyAccepted, KeyRejected or KeyUnknown.
	KeyState string
	// Status is the HTTP status that rejected the key or of a call that
	// failed; 0 when none did or no answer came.
	Status int
	// Error says why the key was rejected or why nothing is known; "" when
	// the key was accepted with something to show.
	Error string

	// HasQuota is true when quota_usage answered with a limit or a count.
	HasQuota bool
	Quota    Quota

	// HasBalance is true when users/me answered with a balance.
	HasBalance bool
	// Balance is the account balance in USD.
	Balance float64
}

// Quota is the key's daily request quota, which Chutes resets at 00:00 UTC.
type Quota struct {
	// Limit is the requests a day; 0 when there is none or the answer did
	// not say.
	Limit float64
	// Unlimited is true when the answer says there is no limit: quota 0 (or
	// less), or "unlimited", as free and invoiced accounts get.
	Unlimited bool
	// Used is today's requests as Chutes counts them (it lags).
	Used float64
}

// UsedToday is the larger of Chutes' count and own, the proxy's own count
// today (0 when unknown): Chutes' metering lags.
func (a Account) UsedToday(own int) float64 { return math.Max(a.Quota.Used, float64(own)) }

// QuotaShare is the part of the daily quota used today (1 = all of it),
// counted as UsedToday; 0 when no limit is known.
func (a Account) QuotaShare(own int) float64 {
	if !a.HasQuota || a.Quota.Limit <= 0 {
		return 0
	}
	return a.UsedToday(own) / a.Quota.Limit
}

// QuotaExhausted reports whether Chutes' daily quota is used up.
func (a Account) QuotaExhausted(own int) bool { return a.QuotaShare(own) >= 1 }

// Summary says what is known in one phrase, "" when nothing is: "212 of 300
// requests used today (resets at 00:00 UTC, in 5h12m); balance $10.50". own
// is the proxy's own count today; the larger count is shown.
func (a Account) Summary(own int, now time.Time) string {
	var parts []string
	if a.HasQuota {
		used := int(math.Round(a.UsedToday(own)))
		reset := "resets at 00:00 UTC, in " + human.Duration(diagnose.NextUTCMidnight(now).Sub(now))
		switch {
		case a.Quota.Unlimited:
			parts = append(parts, fmt.Sprintf("%d requests used today (no daily quota)", used))
		case a.Quota.Limit <= 0:
			parts = append(parts, fmt.Sprintf("%d requests used today (no limit reported)", used))
		case a.QuotaExhausted(own):
			parts = append(parts, fmt.Sprintf("%d of %.0f requests used today: the daily quota is used up (%s)", used, a.Quota.Limit, reset))
		default:
			parts = append(parts, fmt.Sprintf("%d of %.0f requests used today (%s)", used, a.Quota.Limit, reset))
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
// https://api.chutes.ai) about key: today's quota use and the balance, both
// at once. A 401 (or 403 from both calls) means the key is rejected, which
// is known before any chat fails. It costs no request of the quota. The key
// is sent only in the Authorization header and appears in nothing returned.
func CheckAccount(ctx context.Context, client *http.Client, accountURL, key string) Account {
	ctx, cancel := context.WithTimeout(ctx, accountTimeout)
	defer cancel()
	base := strings.TrimRight(accountURL, "/")
	a := Account{CheckedAt: time.Now(), KeyState: KeyUnknown}
	var quota answer
	var wg sync.WaitGroup
	wg.Go(func() { quota = get(ctx, client, base, quotaPath, key) })
	user := get(ctx, client, base, userPath, key)
	wg.Wait()

	accepted := quota.status == http.StatusOK || user.status == http.StatusOK
	var problems []string
	for _, x := range []answer{quota, user} {
		switch {
		case x.status == http.StatusUnauthorized || x.status == http.StatusForbidden && !accepted:
			// Nothing the other call said is shown for a rejected key.
			return Account{CheckedAt: a.CheckedAt, KeyState: KeyRejected, Status: x.status,
				Error: fmt.Sprintf("the account API at %s answered %d: %s", base, x.status, x.reason())}
		case x.status != http.StatusOK:
			problems = append(problems, x.problem())
			if a.Status == 0 {
				a.Status = x.status
			}
		}
	}
	if accepted {
		a.KeyState = KeyAccepted
	}
	if quota.status == http.StatusOK {
		var err error
		if a.Quota, a.HasQuota, err = parseQuota(quota.body); err != nil {
			problems = append(problems, "GET "+quotaPath+": "+err.Error())
		}
	}
	if user.status == http.StatusOK {
		var err error
		if a.Balance, a.HasBalance, err = parseBalance(user.body); err != nil {
			problems = append(problems, "GET "+userPath+": "+err.Error())
		}
	}
	problems = slices.Compact(problems) // both calls fail alike when the host does
	switch {
	case a.KeyState == KeyUnknown:
		a.Error = "could not ask Chutes' account API at " + base + ": " + strings.Join(problems, "; ")
	case !a.HasQuota && !a.HasBalance && len(problems) > 0:
		a.Error = "Chutes' account API at " + base + " accepted the key but told nothing: " + strings.Join(problems, "; ")
	}
	return a
}

// answer is one call of the account API.
type answer struct {
	path   string
	status int // 0 when no whole answer came
	body   []byte
	err    error
	took   time.Duration
}

// get GETs base+path with the key; the body is bounded.
func get(ctx context.Context, client *http.Client, base, path, key string) (x answer) {
	x.path = path
	start := time.Now()
	defer func() { x.took = time.Since(start) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if x.err = err; err != nil {
		return x
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if x.err = err; err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			x.err = ue.Err // both calls fail alike when the host does; the URL is said once
		}
		return x
	}
	defer resp.Body.Close()
	x.status = resp.StatusCode
	if x.body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20)); err != nil {
		x.status, x.err = 0, fmt.Errorf("reading the answer: %w", err)
	}
	return x
}

// reason is the API's own words ({"detail": ...}) or the status text.
func (x answer) reason() string {
	return (&failover.UpstreamError{Status: x.status, Body: x.body}).Reason()
}

// problem says what went wrong with a call that did not answer 200. A
// failed request names no path: both calls go to the same host.
func (x answer) problem() string {
	switch {
	case x.err != nil && failover.IsTimeout(x.err):
		return "no answer within " + human.Duration(x.took.Round(time.Second))
	case x.err != nil:
		return failover.Describe(x.err)
	}
	return fmt.Sprintf("GET %s answered %d: %s", x.path, x.status, x.reason())
}

// parseQuota reads {"quota": 300, "used": 15, "chute_id": "*"} leniently:
// numbers may be integers, floats or numeric strings, "limit" stands in for
// "quota" and "unlimited" for a number, a {"data": {...}} wrapper is
// unwrapped. ok is false when the answer has neither a limit nor a count;
// it fails only when the body is not a JSON object.
func parseQuota(body []byte) (q Quota, ok bool, err error) {
	obj, err := object(body, "quota", "limit", "used")
	if err != nil {
		return Quota{}, false, err
	}
	for _, k := range []string{"quota", "limit"} {
		if n, isNum := number(obj[k]); isNum {
			q.Limit, q.Unlimited, ok = max(n, 0), n <= 0, true
			break
		}
		if s, isStr := obj[k].(string); isStr && strings.EqualFold(strings.TrimSpace(s), "unlimited") {
			q.Unlimited, ok = true, true
			break
		}
	}
	used, hasUsed := firstNumber(obj, "used", "usage", "count")
	q.Used = max(used, 0)
	return q, ok || hasUsed, nil
}

// parseBalance reads "balance" from users/me leniently (a number or a
// numeric string such as "$10.50", at the top level or under "data"); ok
// is false when the answer has none.
func parseBalance(body []byte) (balance float64, ok bool, err error) {
	obj, err := object(body, "balance")
	if err != nil {
		return 0, false, err
	}
	balance, ok = firstNumber(obj, "balance")
	return balance, ok, nil
}

// object decodes a JSON object, or its "data" member when that is an
// object and the top level has none of keys.
func object(body []byte, keys ...string) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var obj map[string]any
	if err := d.Decode(&obj); err != nil || obj == nil {
		return nil, errors.New("the answer is not a JSON object")
	}
	if _, top := firstNumber(obj, keys...); !top {
		if inner, isObj := obj["data"].(map[string]any); isObj {
			return inner, nil
		}
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

// number reads a JSON number or a numeric string such as "$1,234.50".
func number(v any) (float64, bool) {
	var s string
	switch x := v.(type) {
	case json.Number:
		s = string(x)
	case string:
		s = strings.ReplaceAll(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(x), "$")), ",", "")
	default:
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}
