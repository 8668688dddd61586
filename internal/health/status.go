package health

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
)

// Levels of Status.Level.
const (
	LevelOK    = "ok"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Key states /status adds to the account API's.
const (
	// KeyNotConfigured: no [upstream] api_key; each app's own key goes to
	// Chutes, so there is no key to check.
	KeyNotConfigured = "not_configured"
	// KeyUnchecked: a key is configured but the account API was not asked
	// (account_url "", probe_interval 0s, or not yet).
	KeyUnchecked = "unchecked"
)

// Status is GET /status. README.md documents every field; change both.
type Status struct {
	Time     time.Time      `json:"time"`
	Level    string         `json:"level"`
	Headline string         `json:"headline"`
	Warnings []string       `json:"warnings"`
	Upstream UpstreamStatus `json:"upstream"`
	// Providers are the [[providers]] tables, in config order; [] when
	// none.
	Providers []ProviderStatus `json:"providers"`
	Key       KeyStatus        `json:"key"`
	Account   *AccountStatus   `json:"account"`
	Quota     *quota.Snapshot  `json:"proxy_quota"`
	Models    []ModelStatus    `json:"models"`
	Chains    []Chain          `json:"chains"`
}

// UpstreamStatus is the upstream's reachability.
type UpstreamStatus struct {
	BaseURL string `json:"base_url"`
	// Reachable is null until a probe ran (or with the probe off).
	Reachable *bool `json:"reachable"`
	// ProbeIntervalS is [health] probe_interval in seconds; 0 = off.
	ProbeIntervalS float64 `json:"probe_interval_s"`
	// Probe is the last probe, null when none ran.
	Probe *Probe `json:"probe"`
}

// KeyStatus describes the configured key without showing it.
type KeyStatus struct {
	// Prefix is the key redacted to its first characters ("cpk_ab…"),
	// "" when none is configured.
	Prefix string `json:"prefix"`
	// State is accepted, rejected, unknown, unchecked or not_configured.
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
}

// AccountStatus is what Chutes' account API said. Numbers it did not send
// are null.
type AccountStatus struct {
	CheckedAt time.Time `json:"checked_at"`
	// QuotaLimit is Chutes' daily request quota; 0 means unlimited.
	QuotaLimit *float64 `json:"quota_limit"`
	// QuotaUsed is today's count as Chutes reports it (it lags).
	QuotaUsed *float64 `json:"quota_used"`
	// UsedToday is the larger of QuotaUsed and the proxy's own count.
	UsedToday *float64 `json:"used_today"`
	// QuotaReset is when Chutes' quota resets (00:00 UTC).
	QuotaReset time.Time `json:"quota_reset"`
	Balance    *float64  `json:"balance"`
	Summary    string    `json:"summary"`
	Error      string    `json:"error,omitempty"`
}

// ModelStatus is one model's health.
type ModelStatus struct {
	ID string `json:"id"`
	// Provider is who serves it: "chutes", or the NAME of NAME:MODEL.
	Provider string `json:"provider"`
	// State is the breaker's: closed, open or half-open.
	State     string `json:"state"`
	Available bool   `json:"available"`
	// WhyUnavailable says why Available is false.
	WhyUnavailable string `json:"why_unavailable,omitempty"`
	// Listed is whether its provider's model list has it; null when no
	// list was fetched yet. A provider's model that is not listed is still
	// tried (KoboldCpp serves any name with the one model it loaded).
	Listed     *bool    `json:"listed"`
	Configured bool     `json:"configured"`
	Aliases    []string `json:"aliases"`
	// InChains are the chains (by their first model) this model is part of.
	InChains []string `json:"in_chains"`
	// SuccessRate is served / (served + failed) over the window; null
	// without attempts. Answers that are the request's fault (400, 401,
	// 402 ...) and cancelled attempts are left out.
	SuccessRate  *float64 `json:"success_rate"`
	LatencyP50MS *int64   `json:"latency_p50_ms"`
	LatencyP95MS *int64   `json:"latency_p95_ms"`
	// Requests and Failures count upstream attempts over the window.
	Requests      int   `json:"requests"`
	Failures      int   `json:"failures"`
	RequestsTotal int64 `json:"requests_total"`
	WindowS       int   `json:"window_s"`
	// LastError is the most recent failed attempt, null if none.
	LastError *LastError `json:"last_error"`
	// RateLimitTokens is the limiter's tokens now; null when unlimited.
	RateLimitTokens   *float64   `json:"rate_limit_tokens"`
	RequestsPerMinute float64    `json:"requests_per_minute"`
	OpenUntil         *time.Time `json:"open_until"`
	CoolingUntil      *time.Time `json:"cooling_until"`
	ContextLength     int        `json:"context_length,omitempty"`
	// FirstTokenCutoffMS is how long an attempt of this model waits for its
	// first token now: first_byte_timeout, or CutoffLearned, the learned
	// cut-off from its recent replies ([failover] learned_cutoff).
	FirstTokenCutoffMS int64 `json:"first_token_cutoff_ms"`
	CutoffLearned      bool  `json:"cutoff_learned"`
}

// Chain is a configured model's fallback chain.
type Chain struct {
	Model   string   `json:"model"`
	Aliases []string `json:"aliases"`
	Chain   []string `json:"chain"`
	// Serving is the first available model of the chain whose provider
	// serves (it answered its last probe, or none ran, and did not refuse
	// its key): where requests are served now; "" when none is.
	Serving string `json:"serving"`
}

// status builds the health picture now, reading r's breakers.
func (m *Monitor) status(r Router) Status {
	now := time.Now()
	cfg := m.config()
	s := Status{Time: now.UTC(), Warnings: []string{}, Providers: []ProviderStatus{}, Models: []ModelStatus{}, Chains: []Chain{}}

	// Models: every chain's in config order, then any other model seen.
	aliases := map[string][]string{}
	for a, id := range r.Aliases() {
		aliases[id] = append(aliases[id], a)
	}
	configured := map[string]bool{}
	inChains := map[string][]string{}
	var order, others []string
	for _, cm := range cfg.Models {
		configured[cm.ID] = true
		chain := r.Resolve(cm.ID)
		s.Chains = append(s.Chains, Chain{Model: cm.ID, Aliases: sorted(aliases[cm.ID]), Chain: chain})
		for _, id := range chain {
			if inChains[id] == nil {
				order = append(order, id)
			}
			inChains[id] = append(inChains[id], cm.ID)
		}
	}
	for _, rm := range r.Models() {
		if inChains[rm.ID] == nil {
			others = append(others, rm.ID)
		}
	}
	slices.Sort(others)
	for _, id := range append(order, others...) {
		ms := m.modelStatus(r, r.Model(id), now)
		ms.Configured = configured[id]
		ms.Aliases = sorted(aliases[id])
		ms.InChains = nonNil(inChains[id])
		s.Models = append(s.Models, ms)
	}
	byID := map[string]*ModelStatus{}
	for i := range s.Models {
		byID[s.Models[i].ID] = &s.Models[i]
	}

	// Upstream and providers.
	s.Upstream = UpstreamStatus{BaseURL: cfg.Upstream.BaseURL, ProbeIntervalS: cfg.Health.ProbeInterval.D().Seconds()}
	p, probed, a, checked := m.state()
	if probed {
		s.Upstream.Probe, s.Upstream.Reachable = &p, new(p.OK())
	}
	provs := m.conf.Load().providers
	for _, cp := range cfg.Providers {
		if pv := provs[cp.Name]; pv != nil {
			s.Providers = append(s.Providers, providerStatus(cfg, cp.Name, pv, now))
		}
	}
	serves := map[string]bool{config.Chutes: s.Upstream.Reachable == nil || *s.Upstream.Reachable}
	for i := range s.Providers {
		ps := &s.Providers[i]
		serves[ps.Name] = ps.Serves()
		for _, ms := range s.Models {
			if ms.Provider == ps.Name {
				ps.Models = append(ps.Models, ms.ID)
			}
		}
		if w := providerWarning(ps); w != "" {
			s.Warnings = append(s.Warnings, w)
		}
	}
	for i, c := range s.Chains {
		if j := slices.IndexFunc(c.Chain, func(id string) bool { return byID[id].Available && serves[byID[id].Provider] }); j >= 0 {
			s.Chains[i].Serving = c.Chain[j]
		}
	}

	// Key and account.
	key := cfg.Upstream.APIKey.Reveal()
	s.Key = KeyStatus{Prefix: config.Redact(key)}
	own := 0
	if m.quota != nil {
		snap := m.quota.Snapshot()
		s.Quota = &snap
		own = snap.Count
		for _, w := range []string{snap.Warning, snap.Problem} {
			if w != "" {
				s.Warnings = append(s.Warnings, w)
			}
		}
	}
	switch {
	case key == "":
		s.Key.State, s.Key.Detail = KeyNotConfigured, "no [upstream] api_key: each app's own key is sent to Chutes"
	case cfg.Upstream.AccountURL == "":
		s.Key.State, s.Key.Detail = KeyUnchecked, "[upstream] account_url is empty, so the key is not checked"
	case cfg.Health.ProbeInterval.D() <= 0:
		s.Key.State, s.Key.Detail = KeyUnchecked, "[health] probe_interval is 0s, so the key is not checked"
	case !checked:
		s.Key.State, s.Key.Detail = KeyUnchecked, "not checked yet"
	default:
		s.Key.State, s.Key.Detail = a.KeyState, a.Error
		if a.KeyState != chutes.KeyRejected {
			if a.Error != "" {
				s.Warnings = append(s.Warnings, a.Error)
			}
			s.Account = accountStatus(a, own, now)
			if share := a.QuotaShare(own); share >= 0.8 && share < 1 {
				s.Warnings = append(s.Warnings, fmt.Sprintf("%.0f of Chutes' %.0f daily requests used", a.UsedToday(own), a.Quota.Limit))
			}
		}
	}
	if key != "" && !strings.HasPrefix(key, "cpk_") {
		s.Warnings = append(s.Warnings, "the configured key does not start with cpk_, so it is not a Chutes API key")
	}
	s.Level, s.Headline = headline(&s, byID, a, own)
	return s
}

// nonNil keeps an empty list a JSON [], not null.
func nonNil(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

// sorted is v sorted, never nil.
func sorted(v []string) []string {
	slices.Sort(v)
	return nonNil(v)
}

func accountStatus(a chutes.Account, own int, now time.Time) *AccountStatus {
	as := &AccountStatus{CheckedAt: a.CheckedAt.UTC(), QuotaReset: diagnose.NextUTCMidnight(now), Summary: a.Summary(own, now), Error: a.Error}
	if a.HasQuota {
		as.QuotaLimit, as.QuotaUsed, as.UsedToday = new(a.Quota.Limit), new(a.Quota.Used), new(a.UsedToday(own))
	}
	if a.HasBalance {
		as.Balance = new(a.Balance)
	}
	return as
}

// modelStatus reads one model's breaker, limiter, listing and statistics.
func (m *Monitor) modelStatus(r Router, fm *failover.Model, now time.Time) ModelStatus {
	id := fm.ID
	prov, name := m.config().Split(id)
	ms := ModelStatus{ID: id, Provider: prov, State: fm.State().String(), WindowS: int(window.Seconds())}
	lim := fm.Limits()
	ms.RequestsPerMinute = lim.RequestsPerMinute
	if t := fm.Tokens(); !math.IsInf(t, 0) && !math.IsNaN(t) && lim.RequestsPerMinute > 0 {
		ms.RateLimitTokens = new(math.Round(t*100) / 100)
	}
	listed, known := m.catalog.Listed(name)
	if prov != config.Chutes {
		listed, known = m.catalog.ProviderListed(prov, name)
	}
	if known {
		ms.Listed = &listed
	}
	if e, ok := m.catalog.Lookup(id); ok {
		ms.ContextLength = e.ContextLength
	}
	if t, ok := m.config().Target(prov); ok {
		d, learned := r.CutOff(id, t.FirstByteTimeout)
		ms.FirstTokenCutoffMS, ms.CutoffLearned = d.Milliseconds(), learned
	}
	m.mu.RLock()
	st := m.models[id]
	m.mu.RUnlock()
	if st != nil {
		st.report(&ms, now)
	}
	switch {
	case fm.State() == gobreaker.StateOpen:
		ms.OpenUntil = new(fm.OpenUntil().UTC())
		ms.WhyUnavailable = fmt.Sprintf("circuit open after %d failures in a row", max(lim.Failures, 1))
		if e := ms.LastError; e != nil && shortReason(e.Reason) != "" {
			ms.WhyUnavailable += " (last: " + shortReason(e.Reason) + ")"
		}
		if d := ms.OpenUntil.Sub(now); d > 0 {
			ms.WhyUnavailable += "; next try in " + human.Duration(d)
		}
	case !fm.CoolingUntil(now).IsZero():
		ms.CoolingUntil = new(fm.CoolingUntil(now).UTC())
		ms.WhyUnavailable = "overloaded (429); resting for " + human.Duration(ms.CoolingUntil.Sub(now))
	case prov == config.Chutes && ms.Listed != nil && !*ms.Listed:
		ms.WhyUnavailable = "not in Chutes' model list"
	}
	ms.Available = ms.WhyUnavailable == ""
	return ms
}

// shortReason trims an upstream reason for a sentence: "No instances
// available (yet) for chute_id=…" → "no instances available".
func shortReason(r string) string {
	if i := strings.Index(r, " for chute_id"); i > 0 {
		r = r[:i]
	}
	r = strings.TrimRight(strings.TrimSpace(r), ".")
	r = human.Truncate(strings.TrimSuffix(r, " (yet)"), 80)
	if r != "" && r[0] >= 'A' && r[0] <= 'Z' && (len(r) < 2 || r[1] < 'A' || r[1] > 'Z') {
		r = strings.ToLower(r[:1]) + r[1:]
	}
	return r
}

// downWhy is the parenthesis of "X is down (…)" for a model modelStatus
// found unavailable: open, cooling or not listed.
func downWhy(ms *ModelStatus) string {
	switch {
	case ms.LastError != nil && ms.State == "open":
		return shortReason(ms.LastError.Reason)
	case ms.CoolingUntil != nil:
		return "overloaded"
	case ms.Listed != nil && !*ms.Listed:
		return "not listed by Chutes"
	}
	return "circuit open"
}

// headline is the sentence a person reads first, and its level; byID
// indexes s.Models.
func headline(s *Status, byID map[string]*ModelStatus, a chutes.Account, own int) (level, text string) {
	host := s.Upstream.BaseURL
	if u, err := url.Parse(host); err == nil && u.Host != "" {
		host = u.Hostname()
	}
	if s.Key.State == chutes.KeyRejected {
		msg := "Chutes rejected your key"
		if s.Key.Prefix != "" {
			msg += " " + s.Key.Prefix
		}
		if a.Error != "" {
			msg += " (" + a.Error + ")"
		}
		return LevelError, msg + ": every request will fail until it is fixed. Chutes keys start with cpk_; check [upstream] api_key or CHUTES_API_KEY for spaces or quotes, or make a new key on the Chutes dashboard (chutes.ai, API keys)."
	}
	level = LevelOK
	raise := func(l string) {
		if l == LevelError || level == LevelOK {
			level = l
		}
	}
	var parts []string
	chutesDown := false
	if r := s.Upstream.Reachable; r != nil {
		if *r {
			parts = append(parts, "Chutes is reachable")
		} else {
			chutesDown = true
			part := "Chutes is unreachable: " + unreachableWhy(s.Upstream.Probe, host)
			via, stranded := elsewhere(s, byID)
			if len(via) > 0 {
				part += "; requests go to " + via
			}
			if len(via) == 0 || len(stranded) > 0 {
				raise(LevelError)
			} else {
				raise(LevelWarn) // another provider serves every chain
			}
			if len(stranded) > 0 && len(s.Providers) > 0 {
				part += "; no other provider serves " + strings.Join(stranded, ", ")
			}
			parts = append(parts, part)
		}
	}

	var down []string
	mentioned := map[string]bool{}
	for _, c := range s.Chains {
		head := byID[c.Model]
		var why string
		switch {
		case head == nil:
			continue
		case !head.Available:
			why = downWhy(head)
		case head.Provider != config.Chutes:
			// Its breaker is closed, but its provider does not answer;
			// Chutes' own models are the part above's.
			if why = providerDown(s, head.Provider); why == "" {
				continue
			}
		default:
			continue
		}
		mentioned[c.Model] = true
		d := c.Model + " is down (" + why + ")"
		if c.Serving != "" {
			raise(LevelWarn)
			d += ", requests go to " + c.Serving
		} else {
			raise(LevelError)
			d += " and no fallback is available"
		}
		down = append(down, d)
	}
	for i := range s.Models {
		ms := &s.Models[i]
		if ms.Available || mentioned[ms.ID] {
			continue
		}
		raise(LevelWarn)
		d := ms.ID + " is down (" + downWhy(ms) + ")"
		if len(ms.InChains) > 0 {
			d = "fallback " + d
		}
		down = append(down, d)
	}
	const most = 3
	if len(down) > most {
		down = append(down[:most], fmt.Sprintf("%d more models are down", len(down)-most))
	}
	parts = append(parts, down...)
	if len(down) == 0 && len(s.Models) > 0 && !chutesDown {
		if len(s.Models) == 1 {
			parts = append(parts, s.Models[0].ID+" is available")
		} else {
			parts = append(parts, fmt.Sprintf("all %d models are available", len(s.Models)))
		}
	}

	if q := s.Quota; q != nil && q.Exhausted {
		raise(LevelError)
		parts = append(parts, fmt.Sprintf("the proxy's own daily quota is used up (%d of %d), requests are refused until 00:00 UTC", q.Count, q.Limit))
	}
	if s.Account != nil && a.QuotaExhausted(own) {
		raise(LevelError)
		p := fmt.Sprintf("Chutes' daily quota is used up (%.0f of %.0f, resets at 00:00 UTC)", *s.Account.UsedToday, a.Quota.Limit)
		if a.HasBalance && a.Balance <= 0 {
			p += " and the balance is $0.00"
		}
		parts = append(parts, p)
	}
	if len(s.Warnings) > 0 {
		raise(LevelWarn)
	}
	if len(parts) == 0 {
		return level, "No model has been used yet, and the upstream is not probed ([health] probe_interval is 0s)."
	}
	text = strings.Join(parts, "; ") + "."
	// Capitalise our own words, never a model id ("deepseek-ai/...").
	for _, w := range []string{"all ", "fallback ", "the "} {
		if strings.HasPrefix(text, w) {
			return level, strings.ToUpper(text[:1]) + text[1:]
		}
	}
	return level, text
}

// providerDown says why provider name does not serve ("openrouter is
// unreachable"), "" when it does.
func providerDown(s *Status, name string) string {
	for i := range s.Providers {
		switch ps := &s.Providers[i]; {
		case ps.Name != name || ps.Serves():
		case ps.Key.State == chutes.KeyRejected:
			return name + " refused its key"
		default:
			return name + " is unreachable"
		}
	}
	return ""
}

// elsewhere says where the chains' requests go while Chutes is
// unreachable, by provider ("openrouter (openrouter:deepseek/deepseek-r1:free)"),
// and which chains no model serves.
func elsewhere(s *Status, byID map[string]*ModelStatus) (via string, stranded []string) {
	var names []string
	models := map[string][]string{}
	for _, c := range s.Chains {
		ms := byID[c.Serving]
		switch {
		case ms == nil:
			stranded = append(stranded, c.Model)
			continue
		case ms.Provider == config.Chutes || slices.Contains(models[ms.Provider], ms.ID):
			continue
		case models[ms.Provider] == nil:
			names = append(names, ms.Provider)
		}
		models[ms.Provider] = append(models[ms.Provider], ms.ID)
	}
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + " (" + strings.Join(models[n], ", ") + ")"
	}
	return strings.Join(parts, " and "), stranded
}

// unreachableWhy says which step of the failed probe r failed and what to
// try.
func unreachableWhy(r *Probe, host string) string {
	switch r.FailedStep {
	case chutes.StepDNS:
		return "the DNS lookup of " + host + " failed (" + r.Error + "); check the network or VPN, or set [upstream] resolver = \"1.1.1.1:53\" if only your resolver fails"
	case chutes.StepConnect:
		return "cannot connect to " + host + " (" + r.Error + "); check the network, a firewall or VPN"
	case chutes.StepTLS:
		return "the TLS handshake with " + host + " failed (" + r.Error + "); check the system clock, or a proxy or antivirus that intercepts HTTPS"
	case chutes.StepResponse:
		return r.Error + ": base_url looks wrong"
	}
	return r.Error
}
