package health_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The provider models of these tests, as the config names them.
const (
	orKey   = "sk-or-v1-providerkey.0123456789"
	orModel = "deepseek/deepseek-r1:free"
	mOR     = "openrouter:" + orModel
	mLocal  = "local:llama3.1:8b"
	mOllama = "ollama:qwen2.5:7b"
)

// others is two more OpenAI-compatible servers on loopback and a closed
// port: OpenRouter (a simulator that wants its own key), a local server
// (any key, or none) and an Ollama that is not running.
type others struct {
	orURL, localURL, ollamaURL string
	or, local                  *recorder
	orSim                      *simulator.Simulator
}

func newOthers(t *testing.T) *others {
	t.Helper()
	o := &others{or: &recorder{}, local: &recorder{}}
	o.orSim = simulator.New(simulator.Scenario{Seed: 2, Keys: []string{orKey},
		Models: []simulator.ModelScenario{{ID: orModel, Behavior: simulator.Behavior{ContextLength: 65536}}, {ID: "meta/llama-3.3-70b:free"}}})
	local := simulator.New(simulator.Scenario{Seed: 3, AcceptAnyKey: true, Models: []simulator.ModelScenario{{ID: "llama3.1:8b"}}})
	for _, s := range []struct {
		sim    *simulator.Simulator
		prefix string
		rec    *recorder
		url    *string
	}{{o.orSim, "/api", o.or, &o.orURL}, {local, "", o.local, &o.localURL}} {
		srv := httptest.NewServer(s.rec.wrap(http.StripPrefix(s.prefix, s.sim)))
		t.Cleanup(srv.Close)
		t.Cleanup(s.sim.Close)
		*s.url = srv.URL
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	o.ollamaURL = closed.URL
	return o
}

// config adds the three as [[providers]] and makes the chain
// mHead → mBack → mOR → mLocal → mOllama.
func (o *others) config(c *config.Config) {
	c.Providers = []config.Provider{
		{Name: "openrouter", BaseURL: o.orURL + "/api/v1", APIKey: orKey, APIKeyEnv: "OPENROUTER_API_KEY", Headers: map[string]string{"X-Title": "chutes-proxy"}},
		{Name: "local", BaseURL: o.localURL + "/v1"},
		{Name: "ollama", BaseURL: o.ollamaURL + "/v1"},
	}
	c.Failover.MaxAttempts = 5
	c.Models = []config.Model{{ID: mHead, Aliases: []string{"auto"}, Fallbacks: []string{mBack, mOR, mLocal, mOllama}}}
}

func provider(t *testing.T, s health.Status, name string) health.ProviderStatus {
	t.Helper()
	for _, p := range s.Providers {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no provider %s in /status", name)
	return health.ProviderStatus{}
}

// TestProvidersProbed: one probe reaches Chutes and every provider, each
// with its own key (or none) and headers, never Chutes' key; /status shows
// each provider's reachability, timings, listing and key, its models carry
// their provider and context window, and a local server that is not running
// is a warning saying what to start.
func TestProvidersProbed(t *testing.T) {
	o := newOthers(t)
	h := newHarness(t, o.config)
	h.probe()

	s := h.status(t)
	if len(s.Providers) != 3 || s.Providers[0].Name != "openrouter" || s.Providers[2].Name != "ollama" {
		t.Fatalf("providers %+v", s.Providers)
	}
	or := provider(t, s, "openrouter")
	if or.Reachable == nil || !*or.Reachable || or.Probe == nil || or.Probe.ConnectMS == nil || or.Probe.TTFBMS == nil ||
		or.ModelsListed == nil || *or.ModelsListed != 2 || or.BaseURL != o.orURL+"/api/v1" {
		t.Fatalf("openrouter: %+v", or)
	}
	if or.Key.State != health.KeyUnchecked || or.Key.Prefix != config.Redact(orKey) || len(or.Models) != 1 || or.Models[0] != mOR {
		t.Fatalf("openrouter key %+v models %v", or.Key, or.Models)
	}
	if l := provider(t, s, "local"); l.Reachable == nil || !*l.Reachable || l.Key.State != health.KeyNotConfigured || *l.ModelsListed != 1 {
		t.Fatalf("local: %+v", l)
	}
	ol := provider(t, s, "ollama")
	if ol.Reachable == nil || *ol.Reachable || ol.Probe.FailedStep != chutes.StepConnect || ol.ModelsListed != nil {
		t.Fatalf("ollama: %+v", ol)
	}
	if len(s.Warnings) != 1 {
		t.Fatalf("warnings %q, want the one about ollama", s.Warnings)
	}
	hasAll(t, s.Warnings[0], `provider "ollama"`, "unreachable", "ollama serve")
	if s.Level != health.LevelWarn {
		t.Errorf("level %s with a fallback provider down", s.Level)
	}

	m := model(t, s, mOR)
	if m.Provider != "openrouter" || m.Listed == nil || !*m.Listed || m.ContextLength != 65536 || !m.Available {
		t.Fatalf("%s: %+v", mOR, m)
	}
	if m := model(t, s, mOllama); m.Provider != "ollama" || m.Listed != nil || !m.Available {
		t.Fatalf("%s: %+v", mOllama, m)
	}
	if m := model(t, s, mHead); m.Provider != config.Chutes {
		t.Fatalf("%s: provider %q", mHead, m.Provider)
	}

	// Keys never cross: Chutes got its key, OpenRouter its own with its
	// headers, the local server no Authorization at all.
	for _, a := range h.auths.authorizations() {
		if a != "Bearer "+testKey {
			t.Errorf("Chutes received Authorization %q", a)
		}
	}
	if got := o.or.authorizations(); len(got) != 1 || got[0] != "Bearer "+orKey || o.or.headers[0].Get("X-Title") != "chutes-proxy" || o.or.paths[0] != "/api/v1/models" {
		t.Errorf("OpenRouter received %q %v at %v", got, o.or.headers, o.or.paths)
	}
	if got := o.local.authorizations(); len(got) != 1 || got[0] != "" {
		t.Errorf("the local server received Authorization %q", got)
	}

	body, _ := h.get(t, "/metrics")
	for _, want := range []string{
		"chutes_proxy_upstream_up 1", // the documented series keeps no label
		`chutes_proxy_provider_up{provider="chutes"} 1`,
		`chutes_proxy_provider_up{provider="openrouter"} 1`,
		`chutes_proxy_provider_up{provider="local"} 1`,
		`chutes_proxy_provider_up{provider="ollama"} 0`,
		`chutes_proxy_provider_probe_duration_seconds{provider="openrouter"} `,
		`chutes_proxy_provider_models_listed{provider="openrouter"} 2`,
		`chutes_proxy_provider_models_listed{provider="chutes"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, `chutes_proxy_provider_key_accepted{provider="openrouter"}`) {
		t.Error("a key no request used yet has a verdict")
	}
	page, _ := h.get(t, "/")
	if !strings.Contains(page, `id="provider-list"`) {
		t.Error("the page has no provider list")
	}
	for _, p := range []string{"/", "/status", "/metrics"} {
		if body, _ := h.get(t, p); strings.Contains(body, orKey) || strings.Contains(body, "providerkey") {
			t.Fatalf("GET %s shows the provider's key", p)
		}
	}
}

// TestChutesDownProviderServes: with Chutes unreachable and OpenRouter up,
// the headline says that requests go to OpenRouter, the chain serves there,
// and a request served by it proves its key.
func TestChutesDownProviderServes(t *testing.T) {
	o := newOthers(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	h := newHarness(t, o.config, func(c *config.Config) { c.Upstream.BaseURL = closed.URL + "/v1" })
	h.probe()

	s := h.status(t)
	if s.Level != health.LevelWarn || s.Chains[0].Serving != mOR {
		t.Fatalf("level %s chains %+v", s.Level, s.Chains)
	}
	hasAll(t, s.Headline, "Chutes is unreachable", "cannot connect", "requests go to openrouter ("+mOR+")")
	if strings.Contains(s.Headline, "models are available") {
		t.Errorf("headline %q says every model is available while Chutes is unreachable", s.Headline)
	}

	if code, by := h.chat(t, "auto"); code != 200 || by != mOR {
		t.Fatalf("chat: %d by %q, want 200 by %s", code, by, mOR)
	}
	s = h.status(t)
	if k := provider(t, s, "openrouter").Key; k.State != chutes.KeyAccepted {
		t.Fatalf("openrouter key after serving: %+v", k)
	}
	body, _ := h.get(t, "/metrics")
	if !strings.Contains(body, `chutes_proxy_provider_key_accepted{provider="openrouter"} 1`) {
		t.Error("/metrics lacks the accepted key")
	}
	// The chat went to OpenRouter with OpenRouter's key only.
	for _, a := range o.or.authorizations() {
		if a != "Bearer "+orKey {
			t.Errorf("OpenRouter received Authorization %q", a)
		}
	}
}

// TestChutesDownNothingElse: with no other provider up, Chutes being
// unreachable is an error and the headline names the chains left without.
func TestChutesDownNothingElse(t *testing.T) {
	o := newOthers(t)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	h := newHarness(t, func(c *config.Config) {
		c.Upstream.BaseURL = closed.URL + "/v1"
		c.Providers = []config.Provider{{Name: "ollama", BaseURL: o.ollamaURL + "/v1"}}
		c.Models[0].Fallbacks = []string{mBack, mOllama}
	})
	h.probe()
	s := h.status(t)
	if s.Level != health.LevelError || s.Chains[0].Serving != "" {
		t.Fatalf("level %s chains %+v", s.Level, s.Chains)
	}
	hasAll(t, s.Headline, "Chutes is unreachable", "no other provider serves "+mHead)
}

// TestProviderRefusesItsKey: a provider whose /models wants a key answers
// the probe 401: /status calls its key rejected with its own key setting
// (never Chutes' cpk_ advice), it is still reachable, and a later probe
// that gets the list clears the verdict.
func TestProviderRefusesItsKey(t *testing.T) {
	var refuse atomic.Bool
	refuse.Store(true)
	rec := &recorder{}
	srv := httptest.NewServer(rec.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if refuse.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"Authentication Fails, Your api key is invalid","type":"authentication_error"}}`)
			return
		}
		io.WriteString(w, `{"object":"list","data":[{"id":"deepseek-chat","object":"model"}]}`)
	})))
	defer srv.Close()
	h := newHarness(t, func(c *config.Config) {
		c.Providers = []config.Provider{{Name: "deepseek", BaseURL: srv.URL, APIKey: "sk-deepseek-wrong-key-000", APIKeyEnv: "DEEPSEEK_API_KEY"}}
		c.Models[0].Fallbacks = []string{mBack, "deepseek:deepseek-chat"}
	})
	h.probe()
	s := h.status(t)
	d := provider(t, s, "deepseek")
	if d.Key.State != chutes.KeyRejected || d.Reachable == nil || !*d.Reachable || d.Key.Prefix != "sk-dee…" {
		t.Fatalf("deepseek: %+v", d)
	}
	hasAll(t, d.Key.Detail, "401", "Authentication Fails", `[[providers]] table named "deepseek"`, `api_key_env = "DEEPSEEK_API_KEY"`)
	if len(s.Warnings) != 1 || strings.Contains(s.Warnings[0], "cpk_") {
		t.Fatalf("warnings %q", s.Warnings)
	}
	hasAll(t, s.Warnings[0], `provider "deepseek" refused its key sk-dee…`)
	if got := rec.authorizations(); len(got) != 1 || got[0] != "Bearer sk-deepseek-wrong-key-000" {
		t.Fatalf("deepseek received %q", got)
	}
	body, _ := h.get(t, "/metrics")
	if !strings.Contains(body, `chutes_proxy_provider_key_accepted{provider="deepseek"} 0`) || !strings.Contains(body, `chutes_proxy_provider_up{provider="deepseek"} 0`) {
		t.Error("/metrics lacks the refused key")
	}

	refuse.Store(false)
	h.probe()
	if d := provider(t, h.status(t), "deepseek"); d.Key.State != health.KeyUnchecked || !*d.Reachable || *d.ModelsListed != 1 {
		t.Fatalf("after the key was fixed: %+v", d)
	}
}

// TestProviderReloadForgetsItsList: a provider dropped from the config
// leaves /status, and its models' context windows are forgotten.
func TestProviderReloadForgetsItsList(t *testing.T) {
	o := newOthers(t)
	h := newHarness(t, o.config)
	h.probe()
	if m := model(t, h.status(t), mOR); m.ContextLength != 65536 {
		t.Fatalf("before: %+v", m)
	}
	cfg := *h.cfg
	cfg.Providers = cfg.Providers[1:] // no openrouter
	cfg.Models = []config.Model{{ID: mHead, Fallbacks: []string{mBack, mLocal}}}
	h.mon.Reload(&cfg)
	h.srv.Reload(&cfg)
	s := h.status(t)
	if len(s.Providers) != 2 || s.Providers[0].Name != "local" {
		t.Fatalf("providers after reload: %+v", s.Providers)
	}
	if _, ok := h.srv.Catalog().Lookup(mOR); ok {
		t.Error("the dropped provider's list is still in the catalog")
	}
	if p := provider(t, s, "local"); p.Reachable == nil || !*p.Reachable {
		t.Errorf("an unchanged provider lost its probe: %+v", p)
	}
}

// TestResumesCounted: each resumed stream is counted by the model cut and
// the one that continued.
func TestResumesCounted(t *testing.T) {
	h := newHarness(t)
	h.mon.Resumed(mHead, mHead)
	h.mon.Resumed(mHead, mBack)
	h.mon.Resumed(mHead, mBack)
	body, _ := h.get(t, "/metrics")
	for _, want := range []string{
		`chutes_proxy_resumes_total{from="deepseek-ai/DeepSeek-R1",to="deepseek-ai/DeepSeek-R1"} 1`,
		`chutes_proxy_resumes_total{from="deepseek-ai/DeepSeek-R1",to="Qwen/Qwen2.5-72B-Instruct"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestProviderBacksOffAlone runs the Monitor's loop with a 20 ms interval
// against a Chutes that answers and a provider that answers 503: the
// provider's probes back off (5 in 700 ms) while Chutes' keep their pace,
// and each host only ever sees its own key.
func TestProviderBacksOffAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		hits := map[string]int{}
		auths := map[string][]string{}
		b := newBubble(t, 20*time.Millisecond, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[r.Host]++
			auths[r.Host] = append(auths[r.Host], r.Header.Get("Authorization"))
			mu.Unlock()
			if r.Host == "openrouter.ai" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, `{"data":[{"id":"a/b"}]}`)
		})
		b.cfg.Upstream.APIKey = testKey
		b.cfg.Providers = []config.Provider{{Name: "openrouter", BaseURL: "https://openrouter.ai/api/v1", APIKey: orKey}}
		b.mon.Reload(b.cfg)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { b.mon.Run(ctx, func(string) *http.Client { return b.client() }) })
		defer func() { cancel(); wg.Wait() }()

		time.Sleep(700 * time.Millisecond)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if n := hits["openrouter.ai"]; n != 5 {
			t.Errorf("%d provider probes in 700 ms, want 5 (backed off)", n)
		}
		if n := hits["llm.chutes.ai"]; n < 30 {
			t.Errorf("%d Chutes probes in 700 ms: the provider's backoff slowed them", n)
		}
		for host, want := range map[string]string{"llm.chutes.ai": "Bearer " + testKey, "openrouter.ai": "Bearer " + orKey} {
			for _, a := range auths[host] {
				if a != want {
					t.Fatalf("%s received Authorization %q", host, a)
				}
			}
		}
		p := provider(t, b.status(t), "openrouter")
		if p.Probe == nil || p.Probe.Failures != 5 || p.Probe.Next.Sub(p.Probe.Checked) < 576*time.Millisecond {
			t.Fatalf("provider probe %+v", p.Probe)
		}
	})
}

// TestProviderContextWindow: the probe stores a provider's listed context
// windows where the router reads them, so a provider's model whose window
// is smaller than the prompt is skipped for the next one of the chain.
func TestProviderContextWindow(t *testing.T) {
	small := simulator.New(simulator.Scenario{Seed: 4, AcceptAnyKey: true,
		Models: []simulator.ModelScenario{{ID: "llama3.1:8b", Behavior: simulator.Behavior{ContextLength: 256}}}})
	srv := httptest.NewServer(small)
	defer srv.Close()
	defer small.Close()
	o := newOthers(t)
	h := newHarness(t, o.config, func(c *config.Config) {
		c.Providers[1].BaseURL = srv.URL + "/v1" // local: a 256-token window
		c.Models[0].Fallbacks = []string{mLocal, mOR}
	})
	h.sim.SetBehavior(mHead, simulator.Behavior{Kind: simulator.KindDown})
	h.probe()
	if e, ok := h.srv.Catalog().Lookup(mLocal); !ok || e.ContextLength != 256 {
		t.Fatalf("catalog entry of %s: %+v %v", mLocal, e, ok)
	}
	prompt := strings.Repeat("tell me about the sea. ", 400) // ~2,400 tokens
	resp, err := h.client.Post(h.url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"`+prompt+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if by := resp.Header.Get("X-Chutes-Proxy-Model"); resp.StatusCode != 200 || by != mOR {
		t.Fatalf("chat: %d by %q, want 200 by %s", resp.StatusCode, by, mOR)
	}
	body, _ := h.get(t, "/metrics")
	if !strings.Contains(body, `chutes_proxy_attempts_total{kind="context_too_small",model="local:llama3.1:8b"} 1`) {
		t.Errorf("/metrics lacks the context skip:\n%s", grepAttempts(body))
	}
}

func grepAttempts(body string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "chutes_proxy_attempts_total") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestProviderLedChainDown: a chain led by a provider's model whose server
// is not running is down in the headline, with where its requests go.
func TestProviderLedChainDown(t *testing.T) {
	o := newOthers(t)
	h := newHarness(t, o.config, func(c *config.Config) {
		c.Models = []config.Model{{ID: mOllama, Aliases: []string{"qwen"}, Fallbacks: []string{mOR}}}
	})
	h.probe()
	s := h.status(t)
	if s.Chains[0].Serving != mOR || s.Level != health.LevelWarn {
		t.Fatalf("level %s chains %+v", s.Level, s.Chains)
	}
	hasAll(t, s.Headline, mOllama+" is down (ollama is unreachable), requests go to "+mOR)
}
