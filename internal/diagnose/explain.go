package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"

	"github.com/chutes-proxy/chutes-proxy/internal/human"

	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/fuzzy"
	"github.com/chutes-proxy/chutes-proxy/internal/payload"
)

// CurrentBaseURL is Chutes' inference API.
const CurrentBaseURL = "https://llm.chutes.ai/v1"

// Env is what a diagnosis may mention besides the failure itself. Nothing in
// it is ever printed whole: the key shows as a prefix.
type Env struct {
	BaseURL string
	// KeyPrefix is the redacted key that was sent ("cpk_ab…"), "" if none.
	KeyPrefix string
	// KeyFromClient is true when the key came from the app's Authorization
	// header rather than the proxy's config.
	KeyFromClient bool
	// KeyNotes are what the config loader noticed about the key: trimmed
	// white space or quotes, no cpk_ prefix.
	KeyNotes []string
	// KeyLooksWrong is set when the key does not start with cpk_.
	KeyLooksWrong bool
	// Known lists the model ids the upstream serves; nil when unknown.
	Known func() []string
	// Account describes the account when it is known, e.g. "212 of 300
	// requests used today" or "balance $0.00"; "" when unknown.
	Account func() string
	// Provider tells which provider a model of the chain goes to; nil means
	// every model is Chutes'.
	Provider func(model string) Provider
}

// Provider is what a diagnosis says of another provider than Chutes.
type Provider struct {
	Name      string // "chutes" for Chutes
	BaseURL   string
	KeyPrefix string // the redacted key, "" if it has none
	// KeyFrom says where its key is set: `api_key_env = "OPENROUTER_API_KEY"`
	// or `api_key`.
	KeyFrom string
}

func (e Env) provider(model string) Provider {
	if e.Provider == nil {
		return Provider{Name: "chutes", BaseURL: e.BaseURL}
	}
	return e.Provider(model)
}

// MissingKey is the answer when no key is configured and the client sent none.
func MissingKey(proxyKeySet bool) *Error {
	where := "put your Chutes key (it starts with cpk_) in proxy.toml as [upstream] api_key = \"cpk_...\", " +
		"or in the environment variable CHUTES_API_KEY before starting chutes-proxy, or in your app's API key field"
	if proxyKeySet {
		where = "put your Chutes key (it starts with cpk_) in proxy.toml as [upstream] api_key = \"cpk_...\" " +
			"or in the environment variable CHUTES_API_KEY (the app's key field holds the proxy_key, which is never sent to Chutes)"
	}
	return newError(http.StatusUnauthorized, CodeMissingKey,
		"No Chutes API key: chutes-proxy has none configured and the request carried none. To fix it, "+where+". Get a key on the Chutes dashboard (chutes.ai, API keys).")
}

// InvalidProxyKey is the answer to a client without the right proxy_key.
func InvalidProxyKey() *Error {
	return newError(http.StatusUnauthorized, CodeInvalidProxyKey,
		"chutes-proxy refused the request (not Chutes): this proxy requires its proxy_key. Put the proxy_key from proxy.toml in your app's API key field.")
}

// HostNotAllowed answers a request whose Host is not loopback nor in
// allowed_hosts: a page on another site reaching the proxy through DNS
// rebinding, or a tunnel not yet allowed.
func HostNotAllowed(host string) *Error {
	return newError(http.StatusForbidden, CodeHostNotAllowed,
		fmt.Sprintf("chutes-proxy refused the request: Host %q is not a loopback name. If you reach the proxy through that name on purpose (a tunnel, Docker), add it to allowed_hosts in proxy.toml.", host))
}

// OriginNotAllowed answers a request from a web page whose origin is not in
// cors_origins: any site could otherwise make the browser send requests that
// spend the user's key.
func OriginNotAllowed(origin string) *Error {
	return newError(http.StatusForbidden, CodeOriginNotAllowed,
		fmt.Sprintf("chutes-proxy refused a request from the web page %s: that site is not in cors_origins. If you use a chat front end on that site, add %q to cors_origins under [compat] in proxy.toml.", origin, origin))
}

// BodyError explains a body the proxy cannot route.
func BodyError(err error, limitMB int) *Error {
	var se *payload.SyntaxError
	switch {
	case errors.Is(err, ErrBodyTooLarge):
		return newError(http.StatusRequestEntityTooLarge, CodeBodyTooLarge,
			fmt.Sprintf("The request body is larger than chutes-proxy's limit of %d MB. Shorten the conversation, or raise max_body_mb in proxy.toml.", limitMB))
	case errors.Is(err, payload.ErrNoModel):
		return withParam(newError(http.StatusBadRequest, CodeMissingModel,
			`The request has no "model". Set the model in your app (for example deepseek-ai/DeepSeek-R1, or an alias from proxy.toml).`), "model")
	case errors.Is(err, payload.ErrModelType):
		return withParam(newError(http.StatusBadRequest, CodeMissingModel,
			`The request's "model" is not a string. Send the model id as text, for example "deepseek-ai/DeepSeek-R1".`), "model")
	case errors.As(err, &se):
		return newError(http.StatusBadRequest, CodeInvalidJSON,
			"The request body is not valid JSON ("+se.Error()+"). Send a JSON object such as {\"model\": \"...\", \"messages\": [...]}.")
	}
	return newError(http.StatusBadRequest, CodeInvalidJSON, "The request body could not be read: "+err.Error())
}

// ErrBodyTooLarge is what the proxy reports when a body passes max_body_mb.
var ErrBodyTooLarge = errors.New("request body too large")

func withParam(e *Error, p string) *Error {
	e.Param = &p
	return e
}

// Explain turns the outcome of a chain walk into the client's error.
func Explain(res failover.Result, err error, env Env) *Error {
	var ue *failover.UpstreamError
	switch {
	case errors.As(err, &ue):
		e := fromUpstream(ue, env)
		e.Attempts = res.Attempts
		return e
	case errors.Is(err, context.DeadlineExceeded):
		e := newError(http.StatusGatewayTimeout, CodeTimeout,
			"The request took longer than request_timeout in proxy.toml"+attemptList(res.Attempts)+". Retry, or raise [upstream] request_timeout.")
		e.Attempts = res.Attempts
		return e
	case errors.Is(err, failover.ErrExhausted):
		e := exhausted(res, env)
		e.Attempts = res.Attempts
		return e
	case err != nil:
		e := newError(http.StatusBadGateway, CodeAllUnavailable, "chutes-proxy could not complete the request: "+err.Error())
		e.Attempts = res.Attempts
		return e
	}
	return nil
}

// fromUpstream explains an upstream answer that goes back at once.
func fromUpstream(ue *failover.UpstreamError, env Env) *Error {
	reason := ue.Reason()
	if ue.Provider != "" && ue.Provider != "chutes" {
		return providerRefused(ue, env)
	}
	switch ue.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return InvalidKey(reason, env)
	case http.StatusPaymentRequired:
		msg := fmt.Sprintf("Chutes refused the request for payment (%q): your account balance or daily request quota is used up (the Base tier allows 300 requests a day, reset at 00:00 UTC).", reason)
		if env.Account != nil {
			if a := env.Account(); a != "" {
				msg += " Chutes reports: " + a + "."
			}
		}
		msg += " Check your balance and quota on the Chutes dashboard (chutes.ai), top up, or wait for the daily reset."
		return newError(http.StatusPaymentRequired, CodePaymentRequired, msg)
	}
	return rejected(ue, "Chutes")
}

// rejected explains another 4xx: the upstream (who) judged the request
// itself. An OpenAI-shaped body already reads well in every client: it is
// passed on as is.
func rejected(ue *failover.UpstreamError, who string) *Error {
	if isOpenAIError(ue.Body) {
		e := newError(ue.Status, CodeUpstreamRejected, ue.Reason())
		e.Raw = ue.Body
		return e
	}
	return newError(ue.Status, CodeUpstreamRejected,
		fmt.Sprintf("%s rejected the request (%d): %s. Check the request's parameters in your app.", who, ue.Status, ue.Reason()))
}

// providerRefused explains a 401/402/403 (or another 4xx) from a provider
// other than Chutes: its own key and settings, never Chutes' cpk_ advice.
func providerRefused(ue *failover.UpstreamError, env Env) *Error {
	var p Provider
	if env.Provider != nil {
		p = env.Provider(ue.Provider + ":")
	}
	p.Name = ue.Provider
	table := fmt.Sprintf("the [[providers]] table named %q in proxy.toml", p.Name)
	reason := ue.Reason()
	switch ue.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		msg := fmt.Sprintf("The provider %q rejected its API key", p.Name)
		if p.KeyPrefix != "" {
			msg += " " + p.KeyPrefix
		} else {
			msg += " (none is set, so no Authorization header was sent)"
		}
		msg += fmt.Sprintf(": %q. Set its own key in %s", reason, table)
		if p.KeyFrom != "" {
			msg += " (now: " + p.KeyFrom + ")"
		}
		msg += ", as api_key or api_key_env; a key of one provider never goes to another."
		return newError(http.StatusUnauthorized, CodeInvalidKey, msg)
	case http.StatusPaymentRequired:
		msg := fmt.Sprintf("The provider %q wants payment (%q): its credits or quota are used up.", p.Name, reason)
		if strings.Contains(p.BaseURL, "openrouter.ai") {
			msg += " Add credits on openrouter.ai (Settings, Credits), or use its free models (ids ending in :free)."
		} else {
			msg += " Top up that account, or remove the provider from the chain in proxy.toml."
		}
		return newError(http.StatusPaymentRequired, CodePaymentRequired, msg)
	}
	return rejected(ue, fmt.Sprintf("The provider %q", p.Name))
}

// InvalidKey explains a 401/403 from the upstream.
func InvalidKey(reason string, env Env) *Error {
	var b strings.Builder
	b.WriteString("Chutes rejected the API key")
	if env.KeyPrefix != "" {
		b.WriteString(" " + env.KeyPrefix)
	}
	if env.KeyFromClient {
		b.WriteString(" (sent by your app)")
	} else {
		b.WriteString(" (from chutes-proxy's config)")
	}
	if reason != "" {
		fmt.Fprintf(&b, ": %q", reason)
	}
	b.WriteString(".")
	if env.KeyLooksWrong {
		b.WriteString(" It does not start with cpk_, so it is not a Chutes API key (another provider's key, or a Chutes account password?).")
	}
	for _, n := range env.KeyNotes {
		b.WriteString(" Note: " + n + ".")
	}
	b.WriteString(" Chutes keys start with cpk_; check that it was pasted whole, with no spaces or quotes around it, or regenerate one on the Chutes dashboard (chutes.ai, API keys).")
	return newError(http.StatusUnauthorized, CodeInvalidKey, b.String())
}

func isOpenAIError(b []byte) bool {
	s := strings.TrimSpace(string(b[:min(len(b), 64)]))
	return strings.HasPrefix(s, `{"error":{`) || strings.HasPrefix(s, `{"error": {`) || strings.HasPrefix(s, "{\n  \"error\": {")
}

// exhausted explains a chain where no model served.
func exhausted(res failover.Result, env Env) *Error {
	var upstream429, local, notFound, notAPI, network, other, total int
	var retry time.Duration
	for _, a := range res.Attempts {
		total++
		var na *failover.NotAPIError
		switch {
		case a.Status == http.StatusTooManyRequests:
			upstream429++
			retry = minPositive(retry, a.RetryAfter)
		case a.Kind == failover.KindCooling:
			upstream429++
			retry = minPositive(retry, a.RetryAfter)
		case a.Kind == failover.KindLocalLimit:
			local++
			retry = minPositive(retry, a.RetryAfter)
		case a.Status == http.StatusNotFound:
			var ue *failover.UpstreamError
			if errors.As(a.Err, &ue) && failover.LooksLikeHTML(ue.Body) {
				notAPI++
			} else {
				notFound++
			}
		case errors.As(a.Err, &na):
			notAPI++
		case a.Err != nil && failover.IsNetwork(a.Err):
			network++
		default:
			other++
		}
	}
	others := otherProviders(res, env)
	switch {
	case total > 0 && network == total && !others:
		return Unreachable(env.BaseURL, res.Attempts)
	case total > 0 && notAPI == total:
		return WrongURL(env.BaseURL, res.Attempts[0].Reason)
	case total > 0 && notFound == total && !listedAny(res, env):
		return ModelNotFound(res.Requested, env)
	case total > 0 && upstream429+local == total && upstream429 > 0:
		if retry <= 0 {
			retry = 5 * time.Second
		}
		e := newError(http.StatusTooManyRequests, CodeRateLimited,
			"Chutes is rate-limiting or at capacity for every model tried"+attemptList(res.Attempts)+
				fmt.Sprintf(". Slow down and retry in %s, or add fallback models to this chain in proxy.toml.", human.Duration(retry)))
		e.RetryAfter = retry
		return e
	case total > 0 && local == total:
		if retry <= 0 {
			retry = time.Second
		}
		e := newError(http.StatusTooManyRequests, CodeLocalRateLimit,
			"chutes-proxy's own rate limit stopped this request (not Chutes)"+attemptList(res.Attempts)+
				fmt.Sprintf(". It frees up in %s; raise requests_per_minute in proxy.toml to allow more.", human.Duration(retry)))
		e.RetryAfter = retry
		return e
	}
	msg := "No model could answer"
	if len(res.Attempts) == 0 {
		msg += " (the chain is empty)"
	}
	msg += attemptList(res.Attempts) + ". "
	if others {
		msg += "These models are down or busy at every provider tried; retry in a minute, or add fallbacks to this chain in proxy.toml ([[models]] fallbacks)."
	} else {
		msg += "The Chutes miners for these models are down or busy; retry in a minute, or add fallbacks to this chain in proxy.toml ([[models]] fallbacks)."
	}
	msg += providerHints(res, env)
	e := newError(http.StatusServiceUnavailable, CodeAllUnavailable, msg)
	if retry > 0 {
		e.RetryAfter = retry
	}
	return e
}

// otherProviders reports whether the walk asked a provider other than
// Chutes.
func otherProviders(res failover.Result, env Env) bool {
	for _, a := range res.Attempts {
		if env.provider(a.Model).Name != "chutes" {
			return true
		}
	}
	return false
}

// providerHints are the fixes the usual local servers and OpenRouter call
// for, one per provider that failed in a recognisable way.
func providerHints(res failover.Result, env Env) string {
	var hints []string
	seen := map[string]bool{}
	add := func(key, hint string) {
		if !seen[key] {
			seen[key] = true
			hints = append(hints, hint)
		}
	}
	for _, a := range res.Attempts {
		p := env.provider(a.Model)
		if p.Name == "chutes" {
			continue
		}
		_, model, _ := strings.Cut(a.Model, ":")
		switch r := strings.ToLower(a.Reason); {
		case strings.Contains(r, "refused") && a.Err != nil && failover.IsNetwork(a.Err) && isLoopbackURL(p.BaseURL):
			add(p.Name+"down", fmt.Sprintf("Nothing listens at %s (%q): %s, or fix its base_url.", p.BaseURL, p.Name, LocalServer(p.Name, p.BaseURL).Start()))
		case strings.Contains(r, "try pulling it first") || (a.Status == http.StatusNotFound && LocalServer(p.Name, p.BaseURL).Kind == Ollama):
			add(p.Name+"pull", fmt.Sprintf("Ollama (%q) does not have %s: run `ollama pull %s` on that machine.", p.Name, model, model))
		case a.Status == http.StatusTooManyRequests && strings.Contains(p.BaseURL, "openrouter.ai"):
			add(p.Name+"429", fmt.Sprintf("OpenRouter (%q) limits free models (ids ending in :free) to a few requests a minute and a day; wait a minute, or add credits to lift the daily limit.", p.Name))
		}
	}
	if len(hints) == 0 {
		return ""
	}
	return " " + strings.Join(hints, " ")
}

func isLoopbackURL(base string) bool {
	u, err := url.Parse(base)
	return err == nil && config.IsLoopback(u.Host)
}

// Unreachable explains a walk where no attempt reached the upstream at
// all: the network, not the models, so failing over could not help.
func Unreachable(base string, as []failover.Attempt) *Error {
	host := base
	if u, err := url.Parse(base); err == nil && u.Host != "" {
		host = u.Host
	}
	reason := as[0].Reason
	msg := fmt.Sprintf("chutes-proxy could not reach %s (%s), so no model could be asked. This is the network between this machine and Chutes, not Chutes' models:", host, strings.TrimRight(reason, "."))
	switch {
	case strings.HasPrefix(reason, "DNS"):
		msg += " the name does not resolve. Check your internet connection or VPN; if only your DNS server fails, set [upstream] resolver = \"1.1.1.1:53\" in proxy.toml."
	case strings.Contains(reason, "TLS"):
		msg += " the secure connection failed. Check the computer's clock, and any proxy or antivirus that intercepts HTTPS."
	default:
		msg += " the connection failed. Check your internet connection, VPN or firewall."
	}
	if hint := URLHint(base); hint != "" {
		msg += " Also: " + hint
	}
	msg += " `chutes-proxy doctor` checks each step."
	return newError(http.StatusServiceUnavailable, CodeAllUnavailable, msg)
}

// listedAny reports whether one of the 404ing models is in the upstream's
// list, which makes the 404 a down chute rather than a misspelling.
func listedAny(res failover.Result, env Env) bool {
	if env.Known == nil {
		return false
	}
	known := env.Known()
	if len(known) == 0 {
		return false
	}
	set := make(map[string]bool, len(known))
	for _, k := range known {
		set[k] = true
	}
	for _, a := range res.Attempts {
		if set[a.Model] {
			return true
		}
	}
	return false
}

// ModelNotFound explains an unknown model with the closest real ids.
func ModelNotFound(model string, env Env) *Error {
	msg := fmt.Sprintf("Chutes has no model %q.", model)
	var known []string
	if env.Known != nil {
		known = env.Known()
	}
	if s := Suggest(model, known, 3); len(s) > 0 {
		msg += " Did you mean " + strings.Join(s, " or ") + "?"
	}
	msg += " Model ids include the organisation (org/model) and are case-sensitive; GET /v1/models lists them."
	e := withParam(newError(http.StatusNotFound, CodeModelNotFound, msg), "model")
	return e
}

// WrongURL explains an upstream that does not answer like the Chutes API.
func WrongURL(base, seen string) *Error {
	msg := fmt.Sprintf("The upstream at %s did not answer like the Chutes API (%s), so base_url looks wrong.", base, seen)
	if hint := URLHint(base); hint != "" {
		msg += " " + hint
	}
	msg += " Set [upstream] base_url = \"" + CurrentBaseURL + "\" in proxy.toml (or CHUTES_PROXY_UPSTREAM)."
	return newError(http.StatusBadGateway, CodeUpstreamNotAPI, msg)
}

// URLHint names a known outdated or wrong form of the base URL, "" if base
// is not one of them.
func URLHint(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "It is not a URL."
	}
	host := strings.ToLower(u.Hostname())
	switch {
	case strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/chat/completions"):
		return "It ends in /chat/completions: base_url is the part before that (…/v1)."
	case host == "api.chutes.ai":
		return "api.chutes.ai is Chutes' account API, not the LLM endpoint."
	case host == "api.chutesai.com" || host == "chutesai.com":
		return host + " is not Chutes' domain."
	case host != "llm.chutes.ai" && strings.HasSuffix(host, ".chutes.ai"):
		return host + " is one chute's own address; the OpenAI-compatible router that serves every model is llm.chutes.ai."
	}
	return ""
}

// attemptList renders attempts for a sentence: ": A: why; B: why".
func attemptList(as []failover.Attempt) string {
	if len(as) == 0 {
		return ""
	}
	parts := make([]string, 0, len(as))
	for _, a := range as {
		// the sentence supplies its own full stop
		parts = append(parts, a.Model+": "+strings.TrimRight(a.Reason, ".!"))
	}
	return ": " + strings.Join(parts, "; ")
}

func minPositive(a, b time.Duration) time.Duration {
	switch {
	case b <= 0:
		return a
	case a <= 0:
		return b
	}
	return min(a, b)
}

// StreamInterrupted is the event that ends a committed stream that broke.
func StreamInterrupted(model, reason string) *Error {
	return newError(http.StatusBadGateway, CodeStreamInterrupted,
		fmt.Sprintf("The reply from %s was cut off: %s. The text so far is all there is; regenerate to try again.", model, reason))
}

// Suggest returns up to n known ids closest to name: case-insensitive
// equality first, then ids whose model part matches, then by edit distance.
func Suggest(name string, known []string, n int) []string {
	if name == "" || len(known) == 0 {
		return nil
	}
	lname := strings.ToLower(name)
	type cand struct {
		id    string
		score int
	}
	var cands []cand
	for _, k := range known {
		lk := strings.ToLower(k)
		var score int
		switch {
		case lk == lname:
			score = -3
		case strings.HasSuffix(lk, "/"+lname) || lastPart(lk) == lastPart(lname):
			score = -2
		case strings.Contains(lk, lname) && len(lname) >= 3:
			score = -1
		default:
			score = fuzzy.Distance(lname, lk)
			if score > max(3, len(lname)/3) {
				continue
			}
		}
		cands = append(cands, cand{k, score})
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if cands[i].score != cands[j].score {
			return cands[i].score < cands[j].score
		}
		return cands[i].id < cands[j].id
	})
	out := make([]string, 0, n)
	for _, c := range cands {
		if len(out) == n {
			break
		}
		out = append(out, c.id)
	}
	return out
}

func lastPart(s string) string {
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// NotFound answers a path the proxy does not serve.
func NotFound(path string) *Error {
	return newError(http.StatusNotFound, CodeNotFound,
		fmt.Sprintf("chutes-proxy has no endpoint %q. Apps that ask for a base URL take http://127.0.0.1:8787/v1; apps that ask for the full endpoint take http://127.0.0.1:8787/v1/chat/completions.", path))
}

// MethodNotAllowed answers a wrong method on a known endpoint.
func MethodNotAllowed(method, want string) *Error {
	return newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
		fmt.Sprintf("This endpoint takes %s, not %s.", want, method))
}

// UpstreamUnreachable answers a pass-through request that got no answer.
func UpstreamUnreachable(base, reason string) *Error {
	return newError(http.StatusBadGateway, CodeAllUnavailable,
		fmt.Sprintf("chutes-proxy could not reach %s: %s. Run `chutes-proxy doctor` to see whether it is the network or Chutes.", base, reason))
}
