package doctor

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
)

// The other providers: one line each, the path (DNS, TCP, TLS) folded into
// "reachable", then its key and its configured models.

// checkProviders starts one check per [[providers]] table, each alongside
// the others; each channel has room for its one result.
func (r *runner) checkProviders(ctx context.Context) []chan Result {
	out := make([]chan Result, len(r.cfg.Providers))
	for i, p := range r.cfg.Providers {
		out[i] = make(chan Result, 1)
		go func() { out[i] <- r.checkProvider(ctx, p) }()
	}
	return out
}

// checkProvider probes provider p's /models with its own key and headers
// (never the Chutes key), as the proxy's health probe does, and says
// whether it is reachable, whether it refused its key, and whether it lists
// each configured NAME:MODEL of it.
func (r *runner) checkProvider(ctx context.Context, p config.Provider) Result {
	t, _ := r.cfg.Target(p.Name)
	timeout := min(tcpTimeout, t.ConnectTimeout)
	if timeout <= 0 {
		timeout = tcpTimeout
	}
	// Straight there, as the other checks; through the system's resolver,
	// as the proxy's transport for a provider ([upstream] resolver is for
	// Chutes' host alone).
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return r.dialVia(ctx, r.o.System, timeout, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: r.o.RootCAs, Time: r.o.Now},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: tlsTimeout,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, tcpTimeout+tlsTimeout+modelsTimeout)
	defer cancel()
	pr, entries := chutes.Probe(ctx, &http.Client{Transport: tr}, t)

	name := p.Name
	u, _ := url.Parse(t.BaseURL) // config.Load checked that it parses, with a host
	hp := net.JoinHostPort(u.Hostname(), newTarget(u).port)
	switch {
	case pr.OK():
		return r.providerModels(p, t, pr, entries)
	case pr.Status == http.StatusUnauthorized || pr.Status == http.StatusForbidden || pr.Status == http.StatusPaymentRequired:
		ue := &failover.UpstreamError{Status: pr.Status, Body: pr.Body, Provider: name}
		return fail(CheckProvider, "%s: %s", name, diagnose.Explain(failover.Result{}, ue, providerEnv(p, t)).Message)
	case pr.FailedStep == chutes.StepDNS:
		return fail(CheckProvider, "%s: cannot resolve %s (%s): check the host in its base_url, and the network", name, u.Hostname(), dnsReason(pr.Err))
	case pr.FailedStep == chutes.StepConnect && errors.Is(pr.Err, syscall.ECONNREFUSED) && config.IsLoopback(u.Host):
		return fail(CheckProvider, "%s: nothing listens at %s (connection refused), so requests for its models fail: %s, or fix its base_url in proxy.toml",
			name, t.BaseURL, diagnose.LocalServer(name, t.BaseURL).Start())
	case pr.FailedStep == chutes.StepConnect && errors.Is(pr.Err, syscall.ECONNREFUSED):
		return fail(CheckProvider, "%s: %s refused the connection: nothing accepts connections on that port; check its base_url", name, hp)
	case pr.FailedStep == chutes.StepConnect:
		return fail(CheckProvider, "%s: cannot connect to %s: %v; check the network connection, firewall or VPN", name, hp, unwrapOp(pr.Err))
	case pr.FailedStep == chutes.StepTLS:
		return fail(CheckProvider, "%s: %s", name, r.tlsProblem(u.Hostname(), pr.Err))
	case pr.FailedStep == chutes.StepTimeout:
		return warn(CheckProvider, "%s: %s: the provider is slow or down (its side); the proxy still tries it in its turn", name, pr.Error)
	case pr.FailedStep == chutes.StepResponse:
		return fail(CheckProvider, "%s: %s: its base_url looks wrong; an OpenAI-compatible server answers GET {base_url}/models, "+
			"e.g. https://openrouter.ai/api/v1, or http://127.0.0.1:11434/v1 for Ollama", name, pr.Error)
	case pr.Status == http.StatusTooManyRequests || pr.Status >= 500:
		return warn(CheckProvider, "%s: %s: that is the provider's side, not yours; try again in a minute", name, pr.Error)
	}
	return fail(CheckProvider, "%s: %s", name, pr.Error)
}

// providerModels is the line of a provider that listed its models: its key
// was not refused, and each configured NAME:MODEL of it is listed or not.
func (r *runner) providerModels(p config.Provider, t config.Target, pr chutes.Reachability, entries []catalog.Entry) Result {
	name := p.Name
	msg := fmt.Sprintf("%s: GET %s answered 200 in %s: %s", name, pr.URL, millis(pr.LatencyMS), plural(pr.Models, "model"))
	if key := t.Key.Reveal(); key != "" {
		msg += fmt.Sprintf("; its key %s (%s) was not refused", config.Redact(key), p.KeySetting())
	} else {
		msg += "; no key sent (none configured)"
	}
	listed := make([]string, len(entries))
	for i, e := range entries {
		listed[i] = e.ID
	}
	wants := r.providerWants(name)
	var missing []string
	for _, w := range wants {
		if slices.Contains(listed, w.model) {
			continue
		}
		s := fmt.Sprintf("%s (%s", w.model, w.where)
		if sug := diagnose.Suggest(w.model, listed, 2); len(sug) > 0 {
			s += "; did you mean " + strings.Join(sug, " or ") + "?"
		}
		missing = append(missing, s+")")
	}
	switch {
	case len(wants) == 0:
		return ok(CheckProvider, "%s; no configured model uses it yet (add %q to a chain's fallbacks)", msg, name+":MODEL")
	case len(missing) == 0 && len(wants) == 1:
		return ok(CheckProvider, "%s; it lists %s", msg, name+":"+wants[0].model)
	case len(missing) == 0:
		return ok(CheckProvider, "%s; it lists all %d of its configured models", msg, len(wants))
	}
	them := "them"
	if len(missing) == 1 {
		them = "it"
	}
	fix := "check the ids after \"" + name + ":\" in proxy.toml (they are the provider's own ids)"
	if ollamaLike(name, t.BaseURL, entries) {
		pulls := make([]string, 0, len(missing))
		for _, w := range wants {
			if !slices.Contains(listed, w.model) {
				pulls = append(pulls, "`ollama pull "+w.model+"`")
			}
		}
		fix = "pull " + them + " on that machine: " + strings.Join(pulls, ", ")
	}
	return warn(CheckProvider, "%s; but it does not list %s: requests for %s fail there and go on along the chain; %s",
		msg, strings.Join(missing, ", "), them, fix)
}

// wanted is a configured model of a provider: its own id, and where the
// config names it.
type wanted struct{ model, where string }

// providerWants are the configured ids and fallbacks that go to provider
// name, each once.
func (r *runner) providerWants(name string) []wanted {
	var wants []wanted
	for i, m := range r.cfg.Models {
		for j, id := range append([]string{m.ID}, m.Fallbacks...) {
			prov, model := r.cfg.Split(id)
			if prov != name || slices.ContainsFunc(wants, func(w wanted) bool { return w.model == model }) {
				continue
			}
			where := fmt.Sprintf("models[%d].id", i)
			if j > 0 {
				where = fmt.Sprintf("models[%d].fallbacks", i)
			}
			wants = append(wants, wanted{model, where})
		}
	}
	return wants
}

// ollamaLike reports whether the server is an Ollama: by its name or port,
// or by its model list, whose entries Ollama says are owned by "library".
func ollamaLike(name, base string, entries []catalog.Entry) bool {
	if diagnose.LocalServer(name, base).Kind == diagnose.Ollama {
		return true
	}
	for _, e := range entries {
		var owner struct {
			OwnedBy string `json:"owned_by"`
		}
		if json.Unmarshal(e.Raw, &owner) == nil && owner.OwnedBy == "library" {
			return true
		}
	}
	return false
}

// plural is "1 model", "2 models".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// providerEnv is what diagnose needs to explain a provider's refusal: its
// own key and setting, never Chutes'.
func providerEnv(p config.Provider, t config.Target) diagnose.Env {
	dp := diagnose.Provider{Name: p.Name, BaseURL: t.BaseURL, KeyPrefix: config.Redact(t.Key.Reveal())}
	if dp.KeyPrefix != "" || p.APIKeyEnv != "" {
		dp.KeyFrom = p.KeySetting()
	}
	return diagnose.Env{BaseURL: t.BaseURL, Provider: func(string) diagnose.Provider { return dp }}
}
