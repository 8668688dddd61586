package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
)

// Quota is the daily request quota as the doctor reads Chutes' answer to
// GET /users/me/quota_usage/me ({"quota": 300, "used": 15, "chute_id":
// "*"}, parsed by the health package). Chutes resets it at 00:00 UTC.
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

// readQuota reads a quota_usage answer with health's parsers; an answer
// with neither field is an unknown quota, not an error.
func readQuota(body []byte) (Quota, error) {
	u, err := health.ParseQuotaUsage(body)
	limit, unlimited, set := health.QuotaLimit(body)
	switch {
	case err == nil:
		return Quota{Limit: u.Limit, Unlimited: unlimited, Used: u.Used, Known: true}, nil
	case set:
		return Quota{Limit: limit, Unlimited: unlimited, Known: true}, nil
	case errors.Is(err, health.ErrNoQuota):
		return Quota{}, nil
	}
	return Quota{}, fmt.Errorf("%s: %w", health.QuotaUsagePath, err)
}

// fetchQuota asks Chutes' account API for the key's daily quota and its
// use today.
func fetchQuota(ctx context.Context, client *http.Client, accountURL, key string) (Quota, error) {
	body, err := health.Get(ctx, client, accountURL, health.QuotaUsagePath, key)
	if err != nil {
		return Quota{}, err
	}
	return readQuota(body)
}

// fetchBalance asks for the account's balance in USD; ok is false when the
// answer has none.
func fetchBalance(ctx context.Context, client *http.Client, accountURL, key string) (balance float64, ok bool, err error) {
	body, err := health.Get(ctx, client, accountURL, health.UserPath, key)
	if err != nil {
		return 0, false, err
	}
	b, ok, err := health.ParseBalance(body)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", health.UserPath, err)
	}
	return b, ok, nil
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

	type balance struct {
		v   float64
		ok  bool
		err error
	}
	bch := make(chan balance, 1)
	go func() {
		v, ok, err := fetchBalance(ctx, r.client, cfg.Upstream.AccountURL, key)
		bch <- balance{v, ok, err}
	}()
	q, qerr := fetchQuota(ctx, r.client, cfg.Upstream.AccountURL, key)
	b := <-bch

	for _, err := range []error{qerr, b.err} {
		var se *health.StatusError
		if errors.As(err, &se) && se.Rejected() {
			env := diagnose.Env{KeyPrefix: config.Redact(key), KeyLooksWrong: !strings.HasPrefix(key, "cpk_")}
			r.account = "key rejected"
			return fail(CheckAccount, "%s", diagnose.InvalidKey(fmt.Sprintf("%d from %s: %s", se.Status, cfg.Upstream.AccountURL, statusReason(se)), env).Message)
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

// statusReason is the account API's own words for a status, or the
// status text.
func statusReason(se *health.StatusError) string {
	if se.Reason != "" {
		return se.Reason
	}
	return strings.ToLower(http.StatusText(se.Status))
}

func accountReason(err error) string {
	var de *net.DNSError
	var ve *tls.CertificateVerificationError
	var se *health.StatusError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("account API answered %d: %s", se.Status, statusReason(se))
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
