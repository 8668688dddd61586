package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/diagnose"
)

// The checks that need no network, and the listen port.

// checkConfig loads the config as serve would. On success r.cfg is set.
func (r *runner) checkConfig() Result {
	cfg, err := config.Load(r.o.Load)
	var probs config.Problems
	switch {
	case errors.As(err, &probs):
		res := fail(CheckConfig, "the config has %d problem(s); fix these lines (chutes-proxy check-config shows them too):", len(probs))
		for _, p := range probs {
			res.Detail = append(res.Detail, p.Error())
		}
		return res
	case errors.Is(err, fs.ErrNotExist):
		return fail(CheckConfig, "%v: check the path, or leave --config and %s out to use ./proxy.toml or the built-in defaults", err, config.EnvConfig)
	case err != nil:
		return fail(CheckConfig, "%v", err)
	}
	r.cfg = cfg

	what := cfg.Source + " is valid"
	if cfg.Source == "" {
		what = "no proxy.toml found: the built-in defaults apply"
	}
	switch n := len(cfg.Models); n {
	case 0:
		what += "; no [[models]] configured (each request goes to the model the app names)"
	case 1:
		what += "; 1 model configured"
	default:
		what += fmt.Sprintf("; %d models configured", n)
	}
	// Notes about the key belong to the key's line.
	if other := slices.DeleteFunc(slices.Clone(cfg.Notes), keyNote); len(other) > 0 {
		return warn(CheckConfig, "%s; note: %s", what, strings.Join(other, "; "))
	}
	return ok(CheckConfig, "%s", what)
}

func keyNote(note string) bool {
	return strings.HasPrefix(note, "upstream.api_key") || strings.Contains(note, config.EnvAPIKey)
}

// checkKey looks at the key without sending it anywhere: present, cpk_,
// nothing pasted around it.
func (r *runner) checkKey() Result {
	cfg := r.cfg
	key := cfg.Upstream.APIKey.Reveal()
	// A key that is no cpk_ key has a line of its own below.
	notes := slices.DeleteFunc(slices.Clone(cfg.Notes), func(n string) bool {
		return !keyNote(n) || strings.Contains(n, "does not start with cpk_")
	})
	if key == "" {
		why := ""
		if len(notes) > 0 {
			why = " (" + strings.Join(notes, "; ") + ")"
		}
		if cfg.ProxyKey != "" {
			return fail(CheckKey, "no Chutes key configured%s, and proxy_key is set, so your apps' key field holds the proxy_key, which is never sent to Chutes: "+
				"put your cpk_ key in proxy.toml as [upstream] api_key = \"cpk_...\" or in the environment variable %s", why, config.EnvAPIKey)
		}
		return warn(CheckKey, "no Chutes key configured%s: chutes-proxy forwards each app's own key, so put your cpk_ key in the app's API key field; "+
			"to set one for every app instead, put it in proxy.toml as [upstream] api_key = \"cpk_...\" or in the environment variable %s", why, config.EnvAPIKey)
	}
	from := cfg.SourceName()
	if r.o.Load.Getenv(config.EnvAPIKey) != "" {
		from = "env " + config.EnvAPIKey
	}
	shown := fmt.Sprintf("%s (from %s)", config.Redact(key), from)
	if !strings.HasPrefix(key, "cpk_") {
		if u, err := url.Parse(cfg.Upstream.BaseURL); err == nil && isChutesHost(u.Hostname()) {
			return fail(CheckKey, "%s does not start with cpk_, so it is not a Chutes API key (another provider's key, or a password?): "+
				"create one on the Chutes dashboard (chutes.ai, API keys) and paste it whole", shown)
		}
		return warn(CheckKey, "%s does not start with cpk_ as Chutes keys do; fine if the server at base_url takes other keys", shown)
	}
	if len(notes) > 0 {
		what := "white space"
		if strings.Contains(strings.Join(notes, " "), "quotes") {
			what = "white space or quotes"
		}
		return warn(CheckKey, "%s had %s around it: chutes-proxy trims it and uses the rest, but fix it where you pasted it, and check that the key is whole",
			shown, what)
	}
	return ok(CheckKey, "%s starts with cpk_, no white space or quotes around it", shown)
}

// checkBaseURL compares base_url with Chutes' current API and names known
// wrong forms. It also sets r.target for the network checks.
func (r *runner) checkBaseURL() Result {
	base := r.cfg.Upstream.BaseURL
	from := ""
	if r.o.Load.Getenv(config.EnvUpstream) != "" {
		from = " (from env " + config.EnvUpstream + ")"
	}
	u, _ := url.Parse(base) // config.Load checked that it parses, with a host
	r.target = newTarget(u)
	if base == diagnose.CurrentBaseURL {
		return ok(CheckBaseURL, "%s%s is Chutes' current API", base, from)
	}
	fix := fmt.Sprintf("set [upstream] base_url = %q in proxy.toml", diagnose.CurrentBaseURL)
	if from != "" {
		fix = "unset " + config.EnvUpstream + ", or set it to " + diagnose.CurrentBaseURL
	}
	if hint := diagnose.URLHint(base); hint != "" {
		return fail(CheckBaseURL, "%s%s: %s To fix it, %s", base, from, hint, fix)
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case host == "llm.chutes.ai":
		return fail(CheckBaseURL, "%s%s is not quite Chutes' API address: %s", base, from, fix)
	case config.IsLoopback(u.Host):
		return warn(CheckBaseURL, "%s%s is a server on this machine, not Chutes: fine for a test server or `chutes-proxy simulate`; for Chutes, %s", base, from, fix)
	case u.Scheme == "http":
		return warn(CheckBaseURL, "%s%s is plain http, so the key travels unencrypted; it is not Chutes either: for Chutes, %s", base, from, fix)
	}
	return warn(CheckBaseURL, "%s%s is not Chutes' API (%s): fine for a relay you trust; for Chutes itself, %s", base, from, diagnose.CurrentBaseURL, fix)
}

// checkModelIDs says which configured Chutes models (ids and fallbacks
// that are not aliases) the upstream does not list, with the closest real
// ids. Other providers' models are checked on their own lines.
func (r *runner) checkModelIDs() Result {
	cfg := r.cfg
	type want struct{ id, where string }
	var wants []want
	names := map[string]bool{} // ids to check, and aliases (never checked)
	others := 0
	add := func(id, where string) {
		prov, model := cfg.Split(id)
		if prov != config.Chutes {
			others++
			return
		}
		if id = model; !names[id] {
			names[id] = true
			wants = append(wants, want{id, where})
		}
	}
	for i, m := range cfg.Models {
		add(m.ID, fmt.Sprintf("models[%d].id", i))
		for _, a := range m.Aliases {
			names[a] = true
		}
	}
	for i, m := range cfg.Models {
		for _, f := range m.Fallbacks {
			add(f, fmt.Sprintf("models[%d].fallbacks", i))
		}
	}
	switch {
	case len(wants) == 0 && others > 0:
		return ok(CheckModelIDs, "every configured model is another provider's: see the %s lines", CheckProvider)
	case len(wants) == 0:
		return ok(CheckModelIDs, "no [[models]] configured: nothing to check")
	}
	if r.known == nil {
		return warn(CheckModelIDs, "not checked: there is no model list from the upstream (see %s above)", CheckModels)
	}
	var missing []string
	for _, w := range wants {
		if slices.Contains(r.known, w.id) {
			continue
		}
		s := fmt.Sprintf("%q (%s", w.id, w.where)
		if sug := diagnose.Suggest(w.id, r.known, 2); len(sug) > 0 {
			s += "; did you mean " + strings.Join(sug, " or ") + "?"
		}
		missing = append(missing, s+")")
	}
	if len(missing) > 0 {
		return fail(CheckModelIDs, "Chutes does not list %s: requests for it fail with model_not_found; fix the id in proxy.toml (ids are org/model and case-sensitive)",
			strings.Join(missing, ", "))
	}
	if len(wants) == 1 {
		return ok(CheckModelIDs, "the configured model is listed upstream")
	}
	return ok(CheckModelIDs, "all %d configured models and fallbacks are listed upstream", len(wants))
}

// checkListen finds out whether serve could listen: the port is free, a
// chutes-proxy already holds it (fine), or another program does.
func (r *runner) checkListen(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, listenTimeout)
	defer cancel()
	addr := r.cfg.Listen
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		_ = ln.Close()
		return ok(CheckListen, "%s is free for chutes-proxy serve", addr)
	}
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	next := net.JoinHostPort(host, nextPort(port))
	fix := fmt.Sprintf("stop that program, or give chutes-proxy another port: listen = %q in proxy.toml, or chutes-proxy serve --listen %s (then point your apps there)", next, next)

	// Ask whatever holds the port for chutes-proxy's /healthz, directly
	// (no proxy from the environment); it may not speak HTTP at all.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	resp, herr := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	var op *net.OpError
	switch {
	case errors.As(herr, &op) && op.Op == "dial":
		// Nothing answers there: the listen error is about the address.
		return fail(CheckListen, "cannot listen on %s: %v; use a local address such as \"127.0.0.1:8787\"", addr, unwrapOp(err))
	case herr != nil:
		return fail(CheckListen, "%s is in use by another program (it does not answer like chutes-proxy): %s", addr, fix)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(body)) == "ok" {
		return ok(CheckListen, "%s is taken by a chutes-proxy that is already running there (its /healthz answers ok)", addr)
	}
	return fail(CheckListen, "%s is in use by another program (its /healthz answered %d, not chutes-proxy's ok): %s", addr, resp.StatusCode, fix)
}

func nextPort(port string) string {
	if n, err := strconv.Atoi(port); err == nil && n > 0 && n < 65535 {
		return strconv.Itoa(n + 1)
	}
	return "8788"
}

// unwrapOp drops net.OpError's "listen tcp ADDR:" prefix, which the
// message says already.
func unwrapOp(err error) error {
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Err != nil {
		return op.Err
	}
	return err
}
