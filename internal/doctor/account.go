package doctor

import (
	"context"
	"slices"
	"strings"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
)

// checkAccount asks Chutes' account API whether it accepts the key, and
// how much of the day's quota and of the balance is left.
func (r *runner) checkAccount(ctx context.Context) Result {
	cfg := r.cfg
	key := cfg.Upstream.APIKey.Reveal()
	prove := "run chutes-proxy doctor --live to prove it with one request"
	if r.o.Live {
		prove = "the live check below proves it"
	}
	switch {
	case key == "":
		return warn(CheckAccount, "not checked: no key configured (see %s above)", CheckKey)
	case cfg.Upstream.AccountURL == "":
		return warn(CheckAccount, "not checked: the account API is off ([upstream] account_url = \"\"), so the key is not verified; %s", prove)
	}
	ctx, cancel := context.WithTimeout(ctx, accountTimeout)
	defer cancel()
	a := chutes.CheckAccount(ctx, r.client, cfg.Upstream.AccountURL, key)
	switch a.KeyState {
	case chutes.KeyRejected:
		r.account = "key rejected"
		return fail(CheckAccount, "%s", diagnose.InvalidKey(a.Error, r.env()).Message)
	case chutes.KeyUnknown:
		if r.addrs == nil {
			prove = "the network comes first (see " + CheckDNS + " above)"
		}
		return warn(CheckAccount, "%s, so the key is not verified; %s", a.Error, prove)
	}

	parts := []string{a.Summary(0, r.o.Now()), a.Error}
	if !a.HasQuota {
		parts = append([]string{"daily quota not reported"}, parts...)
	}
	r.account = strings.Join(slices.DeleteFunc(parts, func(p string) bool { return p == "" }), "; ")
	switch share := a.QuotaShare(0); {
	case share >= 1:
		return fail(CheckAccount, "key accepted, but %s; requests fail with 402 until the reset. Wait for the reset, or raise the limit on the Chutes dashboard (chutes.ai: plan, top-up)", r.account)
	case share >= 0.8:
		return warn(CheckAccount, "key accepted, but %.0f%% of today's quota is gone: %s", 100*share, r.account)
	}
	return ok(CheckAccount, "key accepted; %s", r.account)
}
