package health_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// TestMain fails the package if a test leaves a goroutine behind: Run and
// every probe must return when their context ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testKey is the configured key; no response may contain it whole.
const testKey = "cpk_health0123456789.secretpartsecretpart"

// Models of the harness's chain.
const (
	mHead = "deepseek-ai/DeepSeek-R1"
	mBack = "Qwen/Qwen2.5-72B-Instruct"
	mLast = "chutesai/Mistral-Small-3.1-24B-Instruct-2503"
)

// harness is a simulated Chutes, the proxy in front of it wired as app.go
// does (the Monitor as Observer, Pages and request counter; the quota
// Counter as Gate), both on loopback.
type harness struct {
	sim    *simulator.Simulator
	simURL string
	auths  *recorder // what the simulated Chutes received
	cfg    *config.Config
	mon    *health.Monitor
	quota  *quota.Counter
	srv    *proxy.Server
	url    string
	client *http.Client
}

type harnessOpt func(*config.Config)

func newHarness(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{}
	h.sim = simulator.New(simulator.Scenario{Seed: 1, Models: []simulator.ModelScenario{
		{ID: mHead}, {ID: mBack}, {ID: mLast},
	}})
	h.auths = &recorder{}
	up := httptest.NewServer(h.auths.wrap(h.sim))
	t.Cleanup(up.Close)
	t.Cleanup(h.sim.Close)
	h.simURL = up.URL

	cfg, err := config.Load(config.Options{Getenv: func(string) string { return "" }, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream.BaseURL = up.URL + "/v1"
	cfg.Upstream.APIKey = testKey
	cfg.Upstream.AccountURL = ""
	cfg.Upstream.FirstByteTimeout = config.Duration(2 * time.Second)
	cfg.Health.ProbeInterval = 0
	cfg.Breaker.Failures = 3
	cfg.Breaker.Cooldown = config.Duration(time.Minute)
	cfg.Models = []config.Model{{ID: mHead, Aliases: []string{"auto"}, Fallbacks: []string{mBack, mLast}}}
	for _, o := range opts {
		o(cfg)
	}
	h.cfg = cfg

	h.quota = quota.Open(quota.Options{Limit: cfg.Quota.DailyRequests})
	cat := catalog.New()
	h.mon = health.New(health.Options{Config: cfg, Catalog: cat, Quota: h.quota})
	router := failover.New(cfg, nil, h.mon)
	h.srv = proxy.New(proxy.Options{Config: cfg, Router: router, Catalog: cat, Pages: h.mon.Handler(router), Gate: h.quota.Gate, Done: h.mon.Served})
	ts := httptest.NewServer(h.srv)
	t.Cleanup(ts.Close)
	t.Cleanup(h.srv.Close)
	h.url = ts.URL
	h.client = ts.Client()
	t.Cleanup(h.client.CloseIdleConnections)
	return h
}

// probe probes the simulator and checks the account once, now.
func (h *harness) probe() health.Probe {
	return h.mon.ProbeNow(context.Background(), h.srv.ClientFor)
}

// chat sends one chat completion for model and returns the status and the
// model that served.
func (h *harness) chat(t *testing.T, model string) (int, string) {
	t.Helper()
	resp, err := h.client.Post(h.url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Chutes-Proxy-Model")
}

// get returns the body of GET path.
func (h *harness) get(t *testing.T, path string) (string, http.Header) {
	t.Helper()
	resp, err := h.client.Get(h.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b), resp.Header
}

// status decodes GET /status.
func (h *harness) status(t *testing.T) health.Status {
	t.Helper()
	body, _ := h.get(t, "/status")
	var s health.Status
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	if strings.Contains(body, testKey) || strings.Contains(body, "secretpart") {
		t.Fatalf("/status shows the key:\n%s", body)
	}
	return s
}

func model(t *testing.T, s health.Status, id string) health.ModelStatus {
	t.Helper()
	for _, m := range s.Models {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("no model %s in /status", id)
	return health.ModelStatus{}
}

// fakeAccount is Chutes' account API: quota_usage and users/me answer what
// the test sets.
type fakeAccount struct {
	mu        sync.Mutex
	quotaCode int
	quotaBody string
	userCode  int
	userBody  string
	server    *httptest.Server
}

func newFakeAccount(t *testing.T) *fakeAccount {
	f := &fakeAccount{quotaCode: 200, quotaBody: `{"quota":300,"used":15,"chute_id":"*"}`, userCode: 200,
		userBody: `{"user_id":"u1","username":"someone","balance":10.5}`}
	f.server = httptest.NewServer(f)
	t.Cleanup(f.server.Close)
	return f
}

func (f *fakeAccount) set(quotaCode int, quotaBody string, userCode int, userBody string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.quotaCode, f.quotaBody, f.userCode, f.userBody = quotaCode, quotaBody, userCode, userBody
}

func (f *fakeAccount) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	code, body := 404, `{"detail":"Not Found"}`
	switch r.URL.Path {
	case "/users/me/quota_usage/me":
		code, body = f.quotaCode, f.quotaBody
	case "/users/me":
		code, body = f.userCode, f.userBody
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// recorder keeps the headers of every request a fake upstream receives.
type recorder struct {
	mu      sync.Mutex
	headers []http.Header
	paths   []string
}

func (rc *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.mu.Lock()
		rc.headers = append(rc.headers, r.Header.Clone())
		rc.paths = append(rc.paths, r.URL.Path)
		rc.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// authorizations are the Authorization headers received, "" for none.
func (rc *recorder) authorizations() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make([]string, len(rc.headers))
	for i, h := range rc.headers {
		out[i] = h.Get("Authorization")
	}
	return out
}

// hasAll fails the test for each fact text lacks.
func hasAll(t *testing.T, text string, facts ...string) {
	t.Helper()
	for _, f := range facts {
		if !strings.Contains(text, f) {
			t.Errorf("%q lacks %q", text, f)
		}
	}
}
