package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// AccountAPI is a small client for Chutes' account API ({account_url},
// https://api.chutes.ai): per key and free of charge, it tells whether
// Chutes accepts the key, how much of the daily request quota is used, and
// the balance. /models cannot tell: it answers without a key.
type AccountAPI struct {
	// Client makes the requests; each is bounded by its context.
	Client *http.Client
	// BaseURL is account_url, without a trailing slash.
	BaseURL string
}

// Quota is the daily request quota, GET /users/me/quota_usage/me →
// {"quota": 300, "used": 15, "chute_id": "*"}. Chutes resets it at 00:00
// UTC.
type Quota struct {
	// Limit is the number of requests a day; 0 with Unlimited set means
	// there is no limit (Chutes sends quota 0, or "unlimited" for free and
	// invoiced accounts).
	Limit     float64
	Unlimited bool
	Used      float64
	// Known is false when the answer had neither field.
	Known bool
}

// UsedUp reports whether no request is left today.
func (q Quota) UsedUp() bool { return q.Known && !q.Unlimited && q.Limit > 0 && q.Used >= q.Limit }

// Fraction is Used/Limit, 0 when unlimited or unknown.
func (q Quota) Fraction() float64 {
	if !q.Known || q.Unlimited || q.Limit <= 0 {
		return 0
	}
	return q.Used / q.Limit
}

// StatusError is an answer other than 200 from the account API.
type StatusError struct {
	Status int
	// Reason is the API's own words ({"detail": ...}), or the status text.
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("account API answered %d: %s", e.Status, e.Reason)
}

// Rejected reports whether the answer means the key is not accepted.
func (e *StatusError) Rejected() bool {
	return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// Quota asks for the key's daily quota and its use today.
func (a *AccountAPI) Quota(ctx context.Context, key string) (Quota, error) {
	m, err := a.get(ctx, key, "/users/me/quota_usage/me")
	if err != nil {
		return Quota{}, err
	}
	var q Quota
	if v, ok := m["quota"]; ok {
		switch n, isNum, word := number(v); {
		case isNum:
			q.Limit, q.Known = n, true
			q.Unlimited = n == 0
		case strings.EqualFold(word, "unlimited"):
			q.Unlimited, q.Known = true, true
		}
	}
	if n, isNum, _ := number(m["used"]); isNum {
		q.Used, q.Known = n, true
	}
	return q, nil
}

// Balance asks for the account's balance in USD (GET /users/me, field
// "balance"); ok is false when the answer has none.
func (a *AccountAPI) Balance(ctx context.Context, key string) (balance float64, ok bool, err error) {
	m, err := a.get(ctx, key, "/users/me")
	if err != nil {
		return 0, false, err
	}
	n, isNum, _ := number(m["balance"])
	return n, isNum, nil
}

// get fetches one JSON object. Chutes' monitors send the key as a Bearer
// token, which the API accepts as well as the bare key.
func (a *AccountAPI) get(ctx context.Context, key, path string) (map[string]json.RawMessage, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.BaseURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "application/json")
	resp, err := a.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		reason := failover.ReasonFromBody(body)
		if reason == "" {
			reason = strings.ToLower(http.StatusText(resp.StatusCode))
		}
		return nil, &StatusError{Status: resp.StatusCode, Reason: reason}
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%s did not answer with a JSON object: %w", path, err)
	}
	return m, nil
}

// number reads a JSON number, or a string holding one; word is the string
// when it holds something else.
func number(raw json.RawMessage) (n float64, ok bool, word string) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, ""
	}
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, !math.IsNaN(n) && !math.IsInf(n, 0), ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, false, ""
	}
	if n, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && !math.IsNaN(n) && !math.IsInf(n, 0) {
		return n, true, ""
	}
	return 0, false, s
}

// checkAccount asks the account API whether Chutes accepts the key, and
// how much of the day's quota and of the balance is left.
func (r *runner) checkAccount(ctx context.Context) Result {
	cfg := r.cfg
	key := cfg.Upstream.APIKey.Reveal()
	switch {
	case key == "":
		return warn(CheckAccount, "not checked: no key configured (see %s above)", CheckKey)
	case cfg.Upstream.AccountURL == "":
		hint := "run chutes-proxy doctor --live to prove it with one request"
		if r.o.Live {
			hint = "the live check below proves it"
		}
		return warn(CheckAccount, "not checked: the account API is off ([upstream] account_url = \"\"), so the key is not verified; %s", hint)
	}
	ctx, cancel := context.WithTimeout(ctx, accountTimeout)
	defer cancel()
	api := &AccountAPI{Client: r.client, BaseURL: cfg.Upstream.AccountURL}

	type balance struct {
		v   float64
		ok  bool
		err error
	}
	bch := make(chan balance, 1)
	go func() {
		v, ok, err := api.Balance(ctx, key)
		bch <- balance{v, ok, err}
	}()
	q, qerr := api.Quota(ctx, key)
	b := <-bch

	for _, err := range []error{qerr, b.err} {
		if se, isStatus := err.(*StatusError); isStatus && se.Rejected() {
			env := diagnose.Env{KeyPrefix: config.Redact(key), KeyLooksWrong: !strings.HasPrefix(key, "cpk_")}
			r.account = "key rejected"
			return fail(CheckAccount, "%s", diagnose.InvalidKey(fmt.Sprintf("%d from %s: %s", se.Status, cfg.Upstream.AccountURL, se.Reason), env).Message)
		}
	}
	if qerr != nil && b.err != nil {
		next := "run chutes-proxy doctor --live to prove it with one request"
		if r.addrs == nil {
			next = "the network comes first (see " + CheckDNS + " above)"
		}
		return warn(CheckAccount, "could not ask Chutes' account API at %s (%s), so the key is not verified; %s", cfg.Upstream.AccountURL, accountReason(qerr), next)
	}

	var parts []string
	now := r.o.Now()
	reset := diagnose.NextUTCMidnight(now)
	used := fmt.Sprintf("%.0f of %.0f requests used today", math.Floor(q.Used), q.Limit)
	switch {
	case qerr != nil:
		parts = append(parts, "daily quota unknown ("+accountReason(qerr)+")")
	case !q.Known:
		parts = append(parts, "daily quota not reported")
	case q.Unlimited:
		parts = append(parts, "no daily request limit")
	case q.Limit > 0:
		parts = append(parts, fmt.Sprintf("%s, resets in %s (00:00 UTC)", used, untilReset(reset.Sub(now))))
	default:
		parts = append(parts, fmt.Sprintf("%.0f requests used today (no limit reported)", math.Floor(q.Used)))
	}
	bal := ""
	if b.err == nil && b.ok {
		bal = fmt.Sprintf("balance $%.2f", b.v)
		parts = append(parts, bal)
	}
	r.account = strings.Join(parts, "; ")

	switch {
	case q.UsedUp():
		msg := fmt.Sprintf("key accepted, but today's request quota is used up: %s; requests fail with 402 until the reset at 00:00 UTC (in %s)",
			used, untilReset(reset.Sub(now)))
		if bal != "" {
			msg += "; " + bal
		}
		return fail(CheckAccount, "%s. Wait for the reset, or raise the limit on the Chutes dashboard (chutes.ai: plan, top-up)", msg)
	case q.Fraction() >= 0.8:
		return warn(CheckAccount, "key accepted, but %.0f%% of today's quota is gone: %s", 100*q.Fraction(), r.account)
	}
	return ok(CheckAccount, "key accepted; %s", r.account)
}

func accountReason(err error) string {
	var de *net.DNSError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &de):
		return "cannot resolve " + de.Name + ": " + dnsReason(err)
	case errors.As(err, &ve):
		return "its TLS certificate did not verify (" + ve.Err.Error() + ")"
	case isTimeout(err):
		return "no answer within " + accountTimeout.String()
	}
	return unwrapURL(err).Error()
}

// untilReset renders the wait as "5h12m", or "12m" under an hour.
func untilReset(d time.Duration) string {
	m := int64((d + time.Minute - 1) / time.Minute)
	if m < 60 {
		return fmt.Sprintf("%dm", max(m, 1))
	}
	return fmt.Sprintf("%dh%02dm", m/60, m%60)
}
