package health

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// provider is what the Monitor knows of one [[providers]] table: its last
// probe, how many models it listed, and its last word on its key.
type provider struct {
	target config.Target
	// keyFrom names the setting its key comes from (`api_key_env = "X"` or
	// `api_key`), "" when it has none.
	keyFrom string

	mu     sync.Mutex
	probe  Probe // zero before the first
	listed *int  // models in its last list, nil before one
	key    keyVerdict
}

// keyVerdict is a provider's last word on its key: a request it served,
// or a 401/403 to a request or to the probe. The zero value is none.
type keyVerdict struct {
	at       time.Time
	accepted bool // it served a request; else it refused with status
	status   int
	reason   string
	// byProbe: the probe heard the refusal, so the probe's next 200 clears
	// it. A 200 model list proves nothing else: many providers list their
	// models to anyone.
	byProbe bool
}

// providers builds the provider states of cfg, keeping old ones whose
// target did not change, and tells which old ones are gone.
func providers(cfg *config.Config, old map[string]*provider) (cur map[string]*provider, gone []string) {
	cur = make(map[string]*provider, len(cfg.Providers))
	for _, p := range cfg.Providers {
		t, _ := cfg.Target(p.Name)
		if o := old[p.Name]; o != nil && sameTarget(o.target, t) {
			cur[p.Name] = o
			continue
		}
		np := &provider{target: t}
		if p.APIKeyEnv != "" || p.APIKey != "" {
			np.keyFrom = p.KeySetting()
		}
		cur[p.Name] = np
	}
	for name, o := range old {
		if cur[name] != o {
			gone = append(gone, name)
		}
	}
	return cur, gone
}

// sameTarget reports whether a provider's probe would ask the same thing.
func sameTarget(a, b config.Target) bool {
	return a.BaseURL == b.BaseURL && a.Key == b.Key && a.ConnectTimeout == b.ConnectTimeout && maps.Equal(a.Headers, b.Headers)
}

// probeProvider probes p with its own key and headers (never Chutes' key)
// and records the result; its model list goes to the catalog, where the
// router finds each model's context window.
func (m *Monitor) probeProvider(ctx context.Context, client *http.Client, name string, p *provider) Probe {
	r, entries := chutes.Probe(ctx, client, p.target)
	pr := Probe{Reachability: r}
	if ctx.Err() != nil {
		return pr
	}
	if r.OK() && m.conf.Load().providers[name] == p { // not reloaded away meanwhile
		m.catalog.SetProvider(name, entries)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.probe
	if !r.OK() {
		pr.Failures = prev.Failures + 1
	}
	switch {
	case !r.OK() && prev.Failures == 0:
		m.log.Warn("provider unreachable", "provider", name, "upstream", p.target.BaseURL, "step", r.FailedStep, "status", r.Status, "err", r.Error)
	case r.OK() && prev.Failures > 0:
		m.log.Info("provider reachable again", "provider", name, "upstream", p.target.BaseURL, "latency_ms", r.LatencyMS)
	}
	pr.Next = prev.Next
	p.probe = pr
	if r.OK() {
		p.listed = new(r.Models)
	}
	switch {
	case keyRefusal(r.Status):
		p.key = keyVerdict{at: r.Checked, status: r.Status, reason: r.Reason, byProbe: true}
	case r.OK() && p.key.byProbe:
		p.key = keyVerdict{}
	}
	return pr
}

func keyRefusal(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden
}

// heardKey notes what a request's attempt says of its provider's key: a
// model that served proves it, a 401/403 refuses it. Chutes' key is the
// account API's to judge.
func (m *Monitor) heardKey(model string, a failover.Attempt) {
	s := m.conf.Load()
	name, _ := s.cfg.Split(model)
	p := s.providers[name]
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.Kind == failover.KindServed {
		if !p.key.accepted {
			p.key = keyVerdict{at: time.Now(), accepted: true}
		}
		return
	}
	p.key = keyVerdict{at: time.Now(), status: a.Status, reason: a.Reason}
}

// ProviderStatus is one [[providers]] table's reachability: the fields of
// UpstreamStatus, and its name, key and listed models.
type ProviderStatus struct {
	Name string `json:"name"`
	UpstreamStatus
	// ModelsListed is how many models its last good list held (kept while
	// a later probe fails); null before one.
	ModelsListed *int `json:"models_listed"`
	// Key is its own key: not_configured (no Authorization is sent),
	// unchecked, accepted (a request was served with it) or rejected (it
	// answered 401/403, to a request or to the probe).
	Key KeyStatus `json:"key"`
	// Models are its models in /status's models, as NAME:MODEL.
	Models []string `json:"models"`
}

// Serves reports whether requests may go to the provider: it answered its
// last probe (or none ran) and has not refused its key.
func (p *ProviderStatus) Serves() bool {
	return (p.Reachable == nil || *p.Reachable) && p.Key.State != chutes.KeyRejected
}

// providerStatus reads p's state as /status shows it.
func providerStatus(cfg *config.Config, name string, p *provider, now time.Time) ProviderStatus {
	ps := ProviderStatus{Name: name, Models: []string{},
		UpstreamStatus: UpstreamStatus{BaseURL: p.target.BaseURL, ProbeIntervalS: cfg.Health.ProbeInterval.D().Seconds()}}
	p.mu.Lock()
	pr, listed, key := p.probe, p.listed, p.key
	p.mu.Unlock()
	if !pr.Checked.IsZero() {
		// An API that refuses the key answered: reachable, its key is
		// the problem.
		ps.Probe, ps.Reachable = &pr, new(pr.OK() || keyRefusal(pr.Status))
	}
	ps.ModelsListed = listed
	secret := p.target.Key.Reveal()
	ps.Key.Prefix = config.Redact(secret)
	switch {
	case !key.at.IsZero() && !key.accepted:
		by := "a request"
		if key.byProbe {
			by = "its model list's probe"
		}
		ps.Key.State = chutes.KeyRejected
		ps.Key.Detail = fmt.Sprintf("it answered %d (%s) to %s %s ago: %s", key.status, human.Truncate(key.reason, 120), by,
			human.Duration(now.Sub(key.at).Round(time.Second)), keyFix(name, p))
	case secret == "":
		ps.Key.State, ps.Key.Detail = KeyNotConfigured, "no api_key: no Authorization header is sent, as a local server wants"
	case key.accepted:
		ps.Key.State, ps.Key.Detail = chutes.KeyAccepted, "a request was served with it"
	default:
		ps.Key.State, ps.Key.Detail = KeyUnchecked, "no request has used it yet (a model list, which many providers show anyone, proves no key)"
	}
	return ps
}

// keyFix says where the provider's own key is set: never the cpk_ advice,
// which is Chutes'.
func keyFix(name string, p *provider) string {
	fix := fmt.Sprintf("set its own key in the [[providers]] table named %q, as api_key or api_key_env", name)
	if p.keyFrom != "" {
		fix += " (now: " + p.keyFrom + ")"
	}
	return fix
}

// providerWarning is what a person should know of a provider that does not
// serve, with the fix; "" when it serves.
func providerWarning(ps *ProviderStatus) string {
	switch {
	case ps.Key.State == chutes.KeyRejected:
		who := "its key " + ps.Key.Prefix
		if ps.Key.Prefix == "" {
			who = "requests without a key"
		}
		return fmt.Sprintf("provider %q refused %s: %s", ps.Name, who, ps.Key.Detail)
	case ps.Reachable == nil || *ps.Reachable:
		return ""
	}
	msg := fmt.Sprintf("provider %q (%s) is unreachable: %s", ps.Name, ps.BaseURL, ps.Probe.Error)
	if u, err := url.Parse(ps.BaseURL); err == nil && config.IsLoopback(u.Host) && ps.Probe.FailedStep == chutes.StepConnect {
		msg += "; nothing listens there: " + diagnose.LocalServer(ps.Name, ps.BaseURL).Start()
	}
	return msg
}
