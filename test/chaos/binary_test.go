package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

var (
	binDir    string
	buildOnce = sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "chutes-proxy-chaos-")
		if err != nil {
			return "", err
		}
		binDir = dir
		bin := filepath.Join(dir, "chutes-proxy")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/chutes-proxy/chutes-proxy/cmd/chutes-proxy").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
		return bin, nil
	})
)

func removeBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// binary builds cmd/chutes-proxy once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := buildOnce()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// run runs the binary to its end and adds its output to the sink.
func run(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv(env)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	captured.add("log binary "+strings.Join(args, " ")+" stdout", o.Bytes())
	captured.add("log binary "+strings.Join(args, " ")+" stderr", e.Bytes())
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("%s: %v", args, err)
	}
	return o.String(), e.String(), code
}

// cleanEnv is this process's environment without CHUTES_ variables, plus
// env; HOME points to an empty directory so that nothing of the user's
// leaks in or out.
func cleanEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHUTES_") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "XDG_") {
			out = append(out, kv)
		}
	}
	return append(out, env...)
}

// answered counts the requests a fake server has answered, per path; a
// request counts once its handler has returned.
type answered struct {
	mu sync.Mutex
	n  map[string]int
}

func (a *answered) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.n == nil {
			a.n = map[string]int{}
		}
		a.n[r.URL.Path]++
	})
}

func (a *answered) count(path string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n[path]
}

// reset forgets the requests answered so far.
func (a *answered) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n = nil
}

// Paths of Chutes' account API.
const (
	quotaPath   = "/users/me/quota_usage/me"
	balancePath = "/users/me"
)

// fakeAccount is Chutes' account API: the quota and the balance; seen
// counts what it answered.
func fakeAccount(t *testing.T, seen *answered) *httptest.Server {
	s := httptest.NewServer(seen.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"detail":"Invalid token or user not found"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case quotaPath:
			io.WriteString(w, `{"quota":300,"used":15,"chute_id":"*"}`)
		case balancePath:
			io.WriteString(w, `{"username":"chaos","user_id":"u-1","balance":1.25}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"detail":"Not Found"}`)
		}
	})))
	t.Cleanup(s.Close)
	return s
}

// TestBinaryNeverShowsKeys runs the real binary with both keys set and
// greps everything it printed and served: serve's logs at debug level, /,
// /status, /metrics, /v1/models and chat answers, the status, doctor and
// check-config commands, and a SIGQUIT goroutine dump. TestMain greps the
// same bytes again with the rest of the suite.
func TestBinaryNeverShowsKeys(t *testing.T) {
	bin := binary(t)
	sim := simulator.New(simulator.Scenario{
		Keys: []string{upstreamKey},
		Models: []simulator.ModelScenario{
			{ID: goodModel, Behavior: simulator.Behavior{Reply: "hello " + replyMarker + " there"}},
			{ID: "chaos/down", Behavior: simulator.Behavior{Kind: simulator.KindDown}},
			{ID: "chaos/broke", Behavior: simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 2}},
		},
	})
	var upSeen, acctSeen answered
	up := httptest.NewServer(upSeen.wrap(sim))
	defer up.Close()
	defer sim.Close()
	acct := fakeAccount(t, &acctSeen)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "proxy.toml")
	cfg := fmt.Sprintf(`listen = "127.0.0.1:0"
proxy_key = %q

[upstream]
base_url = %q
api_key = %q
account_url = %q
first_byte_timeout = "2s"

[quota]
daily_requests = 300
state_file = %q

[health]
probe_interval = "1s"

[[models]]
id = "chaos/down"
aliases = ["chaos-auto"]
fallbacks = [%q]
`, proxyKey, up.URL+"/v1", upstreamKey, acct.URL, filepath.Join(dir, "quota.json"), goodModel)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + dir, "CHUTES_PROXY_LOG=debug"}

	out, errOut, code := run(t, bin, env, "check-config", "--config", cfgPath)
	if code != 0 {
		t.Fatalf("check-config: %d\n%s%s", code, out, errOut)
	}
	// A pasted key with white space and quotes gets a (redacted) note.
	if out, errOut, code := run(t, bin, append(env, "CHUTES_API_KEY= \""+upstreamKey+"\" \n"), "check-config", "--config", cfgPath); code != 0 {
		t.Errorf("check-config with a pasted key: exit %d, want 0\n%s%s", code, out, errOut)
	}
	// Every check passes against the fakes: exit 0.
	if out, errOut, code := run(t, bin, env, "doctor", "--config", cfgPath); code != 0 {
		t.Errorf("doctor: exit %d, want 0\n%s%s", code, out, errOut)
	}

	// serve, until SIGQUIT makes the runtime dump every goroutine. Only
	// serve's requests count from here: doctor made its own.
	upSeen.reset()
	acctSeen.reset()
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Env = cleanEnv(env)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderrPipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	addr := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(stderrPipe)
		sc.Buffer(nil, 1<<20)
		re := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)/v1`)
		for sc.Scan() {
			stderr.Write(sc.Bytes())
			stderr.WriteByte('\n')
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	defer cmd.Process.Kill()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not announce its address")
	}

	c := newClient(t)
	get := func(path string, key bool) result {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if key {
			req.Header.Set("Authorization", "Bearer "+proxyKey)
		}
		return doRequest(t, c, req, false)
	}
	for _, model := range []string{goodModel, "chaos-auto", "chaos/broke", "chaos/nope"} {
		for _, stream := range []bool{false, true} {
			r := send(t, c, base, model, stream)
			t.Logf("%s stream=%v: %s", model, stream, r.outcome())
		}
	}
	// The scan below must cover a probe and an account check. serve's
	// monitor runs probe, account check, then records and logs their
	// results, one round at a time: once the account API has answered the
	// quota and the balance and, after that, a /models request reaches the
	// upstream (nothing else fetches it while the test waits here), the
	// next round has started and the first is recorded and logged.
	probesBefore := -1 // /models answered when the account check was first seen answered
	if !eventually(15*time.Second, func() bool {
		if upSeen.count("/v1/models") == 0 || acctSeen.count(quotaPath) == 0 || acctSeen.count(balancePath) == 0 {
			return false
		}
		if probesBefore < 0 {
			probesBefore = upSeen.count("/v1/models")
		}
		return upSeen.count("/v1/models") > probesBefore
	}) {
		t.Fatalf("no probe and account check, then the next probe, within 15 s: %d probes, %d quota and %d balance requests answered",
			upSeen.count("/v1/models"), acctSeen.count(quotaPath), acctSeen.count(balancePath))
	}
	t.Logf("serve's monitor: %d probes, %d quota and %d balance requests answered", upSeen.count("/v1/models"), acctSeen.count(quotaPath), acctSeen.count(balancePath))
	pages := map[string]result{}
	for _, path := range []string{"/", "/status", "/metrics", "/healthz", "/v1/models"} {
		pages[path] = get(path, true)
		t.Logf("GET %s: %d, %d bytes", path, pages[path].status, len(pages[path].body))
	}
	if !strings.Contains(string(pages["/status"].body), "chaos/down") {
		t.Errorf("/status does not list the models: %.300s", pages["/status"].body)
	}
	sout, serr, code := run(t, bin, env, "status", "--url", base)
	t.Logf("status command: %d bytes", len(sout)+len(serr))
	if code != 0 {
		t.Errorf("status: exit %d, want 0\n%s%s", code, sout, serr)
	}

	if err := cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	<-copied
	// The Go runtime's own SIGQUIT handling: dump, then exit 2.
	if err := cmd.Wait(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
		t.Errorf("serve after SIGQUIT: %v, want exit status 2", err)
	}
	captured.add("log binary serve stdout", stdout.Bytes())
	captured.add("log binary serve stderr (with SIGQUIT dump)", stderr.Bytes())
	if !strings.Contains(stderr.String(), "goroutine ") {
		t.Errorf("no goroutine dump after SIGQUIT:\n%.2000s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "chaos/down") {
		t.Errorf("the logs do not mention the requests:\n%.2000s", stderr.String())
	}
	if hits := captured.find(canaries...); len(hits) > 0 {
		t.Errorf("a key leaked:\n%s", strings.Join(hits, "\n"))
	}
	if hits := captured.findIn("log", promptMarker, replyMarker); len(hits) > 0 {
		t.Errorf("a body was logged:\n%s", strings.Join(hits, "\n"))
	}
	var st map[string]any
	if err := json.Unmarshal(pages["/status"].body, &st); err != nil {
		t.Errorf("/status is not JSON: %v", err)
	}
}

// TestServeRefusesOpenListen: serve exits 1, naming proxy_key, when told to
// listen on every interface without one.
func TestServeRefusesOpenListen(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	env := []string{"HOME=" + dir, "XDG_STATE_HOME=" + dir, "CHUTES_API_KEY=" + upstreamKey}
	out, errOut, code := run(t, bin, env, "serve", "--listen", "0.0.0.0:0")
	if code != 1 || !strings.Contains(out+errOut, "proxy_key") {
		t.Fatalf("exit %d, want 1 with a proxy_key problem:\n%s%s", code, out, errOut)
	}
	t.Logf("serve --listen 0.0.0.0:0: exit %d: %s", code, strings.TrimSpace(out+errOut))
}
