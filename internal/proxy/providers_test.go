package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// The tests of issue 14: other providers in the chain, against two
// simulators, one playing Chutes and one a local model server.

const (
	chutesKey = "cpk_test0123456789abcdef.secretsecretsecret"
	localKey  = "sk-local-0123456789"
)

// authLog records the Authorization header of every request an upstream
// received, whatever the path.
type authLog struct {
	mu   sync.Mutex
	seen []string // "PATH AUTH"
}

func (l *authLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, r.URL.Path+" "+r.Header.Get("Authorization")+" "+r.Header.Get("X-Title"))
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *authLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// twoProviders serves a simulated Chutes with chutes models and a simulated
// local provider (named "local", key localKey) with local models, and a
// proxy whose "auto" chain is chain.
func twoProviders(t *testing.T, chutes, local []simulator.ModelScenario, chain []string, edit func(*config.Config)) (cs, ls *simulator.Simulator, clog, llog *authLog, ts *httptest.Server, srv *Server) {
	t.Helper()
	cs = simulator.New(simulator.Scenario{Models: chutes})
	ls = simulator.New(simulator.Scenario{Keys: []string{localKey}, Models: local})
	clog, llog = &authLog{}, &authLog{}
	cu, lu := httptest.NewServer(clog.wrap(cs)), httptest.NewServer(llog.wrap(ls))
	t.Cleanup(func() { cu.Close(); lu.Close(); cs.Close(); ls.Close() })
	cfg := testConfig(t, cu.URL, func(c *config.Config) {
		c.Upstream.APIKey = chutesKey
		c.Upstream.StreamPlain = true
		c.Providers = []config.Provider{{Name: "local", BaseURL: lu.URL + "/v1", APIKey: localKey,
			Headers: map[string]string{"X-Title": "chutes-proxy"}}}
		c.Failover.MaxAttempts = 5
		c.Models = []config.Model{{ID: chain[0], Aliases: []string{"auto"}, Fallbacks: chain[1:]}}
		if edit != nil {
			edit(c)
		}
	})
	ts, srv, _ = startProxy(t, cfg)
	return
}

// noCrossedKeys fails when a key reached the wrong provider.
func noCrossedKeys(t *testing.T, clog, llog *authLog) {
	t.Helper()
	for _, s := range llog.all() {
		if strings.Contains(s, "cpk_") || !strings.Contains(s, "Bearer "+localKey) {
			t.Errorf("the local provider received %q: want its own key only", s)
		}
	}
	for _, s := range clog.all() {
		if strings.Contains(s, localKey) || strings.Contains(s, "chutes-proxy") {
			t.Errorf("Chutes received %q: another provider's key or headers", s)
		}
	}
}

func TestChutesDownOtherProviderServes(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "stream"}[stream], func(t *testing.T) {
			cs, ls, clog, llog, ts, _ := twoProviders(t,
				[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindDown}}, {ID: "a/two", Behavior: simulator.Behavior{Kind: simulator.KindDown}}},
				[]simulator.ModelScenario{{ID: "llama3.1:8b", Behavior: simulator.Behavior{Reply: "from the local model"}}},
				[]string{"a/one", "a/two", "local:llama3.1:8b"}, nil)
			body := `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":` + map[bool]string{false: "false", true: "true"}[stream] + `}`
			resp, b := post(t, ts.URL, body)
			if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Model") != "local:llama3.1:8b" || resp.Header.Get("X-Chutes-Proxy-Attempts") != "3" {
				t.Fatalf("status %d via %q (%s attempts): %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model"), resp.Header.Get("X-Chutes-Proxy-Attempts"), b)
			}
			text := string(b)
			if stream {
				text, _, _, _ = sseText(t, b)
			}
			if !strings.Contains(text, "from the local model") {
				t.Fatalf("reply %s", b)
			}
			if cs.Requests("a/one") != 1 || ls.Requests("llama3.1:8b") != 1 {
				t.Errorf("calls: a/one %d, local %d", cs.Requests("a/one"), ls.Requests("llama3.1:8b"))
			}
			// The provider was asked for its own model id, without the prefix.
			if _, req := ls.LastRequest("llama3.1:8b"); !strings.Contains(string(req), `"model":"llama3.1:8b"`) {
				t.Errorf("the local provider was asked %s", req)
			}
			noCrossedKeys(t, clog, llog)
		})
	}
}

// TestChutesUnreachable: a refused connection to Chutes moves the chat to
// the other provider within a few hundred milliseconds.
func TestChutesUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	_, _, _, llog, ts, _ := twoProviders(t, nil,
		[]simulator.ModelScenario{{ID: "llama3.1:8b", Behavior: simulator.Behavior{Reply: "still here"}}},
		[]string{"a/one", "local:llama3.1:8b"}, func(c *config.Config) { c.Upstream.BaseURL = dead + "/v1" })
	start := time.Now()
	resp, b := post(t, ts.URL, `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	took := time.Since(start)
	if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Model") != "local:llama3.1:8b" {
		t.Fatalf("status %d via %q: %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model"), b)
	}
	if took > 500*time.Millisecond {
		t.Errorf("served after %v: want within a few hundred ms of the refused connect", took)
	}
	if len(llog.all()) != 1 {
		t.Errorf("local requests %v", llog.all())
	}
}

// TestChutesQuotaSpent: a 402 from Chutes skips its other models (the same
// account would be refused) and the other provider serves at once.
func TestChutesQuotaSpent(t *testing.T) {
	cs, _, clog, llog, ts, _ := twoProviders(t,
		[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindPaymentRequired}}, {ID: "a/two"}},
		[]simulator.ModelScenario{{ID: "llama3.1:8b"}},
		[]string{"a/one", "a/two", "local:llama3.1:8b"}, nil)
	resp, b := post(t, ts.URL, `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Chutes-Proxy-Model") != "local:llama3.1:8b" || resp.Header.Get("X-Chutes-Proxy-Attempts") != "2" {
		t.Fatalf("status %d via %q (%s attempts): %s", resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model"), resp.Header.Get("X-Chutes-Proxy-Attempts"), b)
	}
	if cs.Requests("a/two") != 0 {
		t.Errorf("a/two was asked after Chutes' 402")
	}
	noCrossedKeys(t, clog, llog)
}

// TestProviderRefusesItsKey: with Chutes down and the other provider
// refusing its key, the answer is a 401 that names that provider and its
// own key setting, never Chutes' cpk_ advice, with every attempt listed.
func TestProviderRefusesItsKey(t *testing.T) {
	_, _, _, _, ts, _ := twoProviders(t,
		[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindDown}}},
		[]simulator.ModelScenario{{ID: "llama3.1:8b"}},
		[]string{"a/one", "local:llama3.1:8b"}, func(c *config.Config) { c.Providers[0].APIKey = "sk-wrong-0123456789" })
	resp, b := post(t, ts.URL, `{"model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	var e struct {
		Error struct {
			Message, Code string
			Attempts      []map[string]any
		}
	}
	_ = json.Unmarshal(b, &e)
	if resp.StatusCode != 401 || e.Error.Code != "invalid_api_key" {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for _, want := range []string{`"local"`, "[[providers]]", "api_key"} {
		if !strings.Contains(e.Error.Message, want) {
			t.Errorf("message lacks %q: %s", want, e.Error.Message)
		}
	}
	if strings.Contains(e.Error.Message, "cpk_") || strings.Contains(e.Error.Message, "wrong-0123456789") {
		t.Errorf("message gives Chutes' advice or the key: %s", e.Error.Message)
	}
	if len(e.Error.Attempts) != 2 {
		t.Errorf("attempts %v: want both listed", e.Error.Attempts)
	}
}

// TestClientKeyGoesToChutesOnly: with no key configured, a client's own
// Bearer key goes to Chutes and never to another provider, which gets its
// own key (or none).
func TestClientKeyGoesToChutesOnly(t *testing.T) {
	_, _, clog, llog, ts, _ := twoProviders(t,
		[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindDown}}},
		[]simulator.ModelScenario{{ID: "llama3.1:8b"}},
		[]string{"a/one", "local:llama3.1:8b"}, func(c *config.Config) { c.Upstream.APIKey = "" })
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"auto","messages":[]}`))
	req.Header.Set("Authorization", "Bearer cpk_client_own_key_12345")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := clog.all(); len(got) != 1 || !strings.Contains(got[0], "Bearer cpk_client_own_key_12345") {
		t.Errorf("Chutes received %v", got)
	}
	noCrossedKeys(t, clog, llog)
	// /v1/models and pass-through are Chutes': the provider sees nothing.
	for _, path := range []string{"/v1/models", "/v1/files"} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer cpk_client_own_key_12345")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	noCrossedKeys(t, clog, llog)
	if n := len(llog.all()); n != 1 {
		t.Errorf("the provider received %d requests, want the one chat", n)
	}
}

// TestReloadAddsAndRemovesProvider: requests keep being served while a
// reload adds the provider a chain falls back to, and removes it again.
func TestReloadAddsAndRemovesProvider(t *testing.T) {
	_, ls, _, _, ts, srv := twoProviders(t,
		[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindFlaky, FailureRate: 0.5}}},
		[]simulator.ModelScenario{{ID: "llama3.1:8b"}},
		[]string{"a/one", "local:llama3.1:8b"}, func(c *config.Config) {
			c.Breaker.Failures = 1000 // keep a/one in the walk
		})
	with := srv.Config()
	without := *with
	without.Providers = nil
	without.Models = []config.Model{{ID: "a/one", Aliases: []string{"auto"}}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var served, failed atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"auto","messages":[]}`))
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					served.Add(1)
				case 503: // a/one alone, failing: expected while the provider is removed
				default:
					failed.Add(1)
				}
			}
		}()
	}
	for i := 0; ctx.Err() == nil; i++ {
		if i%2 == 0 {
			srv.Reload(&without)
		} else {
			srv.Reload(with)
		}
		time.Sleep(50 * time.Millisecond) // the pace of the reloads, not a wait for anything
	}
	wg.Wait()
	if failed.Load() != 0 || served.Load() == 0 || ls.Requests("llama3.1:8b") == 0 {
		t.Fatalf("served %d, failed %d, local asked %d", served.Load(), failed.Load(), ls.Requests("llama3.1:8b"))
	}
}

// TestOpenAIClientSeesOtherProvider: the official openai-go client reads a
// reply from the other provider like any other, plain and streamed.
func TestOpenAIClientSeesOtherProvider(t *testing.T) {
	_, _, _, _, ts, _ := twoProviders(t,
		[]simulator.ModelScenario{{ID: "a/one", Behavior: simulator.Behavior{Kind: simulator.KindDown}}},
		[]simulator.ModelScenario{{ID: "llama3.1:8b", Behavior: simulator.Behavior{Reply: "local words"}}},
		[]string{"a/one", "local:llama3.1:8b"}, nil)
	client := openai.NewClient(option.WithBaseURL(ts.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{Model: "auto", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	var raw *http.Response
	resp, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Choices[0].Message.Content != "local words" || raw.Header.Get("X-Chutes-Proxy-Model") != "local:llama3.1:8b" {
		t.Fatalf("plain: %q via %q", resp.Choices[0].Message.Content, raw.Header.Get("X-Chutes-Proxy-Model"))
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var text strings.Builder
	for stream.Next() {
		if c := stream.Current(); len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil || text.String() != "local words" {
		t.Fatalf("stream: %q, %v", text.String(), err)
	}
}

// TestModelsListsProviderModels: /v1/models offers the config's
// provider-prefixed models, so that a chat UI's model picker shows them.
func TestModelsListsProviderModels(t *testing.T) {
	_, _, _, llog, ts, _ := twoProviders(t, []simulator.ModelScenario{{ID: "a/one"}}, nil,
		[]string{"a/one", "local:llama3.1:8b"}, nil)
	resp, err := http.Get(ts.URL + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"owned_by"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range list.Data {
		got[m.ID] = m.OwnedBy
	}
	if got["local:llama3.1:8b"] != "local" || got["a/one"] == "" || got["auto"] == "" {
		t.Fatalf("models %v", got)
	}
	if n := len(llog.all()); n != 0 {
		t.Errorf("listing models asked the provider %d times", n)
	}
}
