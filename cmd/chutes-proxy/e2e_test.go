//go:build unix

// End-to-end tests: the real chutes-proxy binary, built once in TestMain,
// runs as a subprocess in front of an in-process simulated Chutes, and the
// official openai-go client talks to it over loopback. Unix only, for the
// signals.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"go.uber.org/goleak"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// binPath is the chutes-proxy binary every end-to-end test runs.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "chutes-proxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "chutes-proxy")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building chutes-proxy for the end-to-end tests: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		// No ignores: every test kills its subprocesses, closes its
		// simulator and the idle connections of its clients.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

func e2eScenario() simulator.Scenario {
	return simulator.Scenario{
		Seed: 1,
		Keys: []string{e2eKey}, // proves the proxy sends the configured key
		Models: []simulator.ModelScenario{
			{ID: mDown, Behavior: simulator.Behavior{Kind: simulator.KindDown}},
			{ID: mHealthy, Behavior: simulator.Behavior{Reply: healthyReply}},
			{ID: mReasoning, Behavior: simulator.Behavior{Reasoning: reasoningText, Reply: reasoningRply}},
			{ID: mDrop, Behavior: simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 5}},
			{ID: mPay, Behavior: simulator.Behavior{Kind: simulator.KindPaymentRequired}},
			{ID: mAlpha, Behavior: simulator.Behavior{Reply: "alpha here"}},
			{ID: mBeta, Behavior: simulator.Behavior{Reply: "beta here"}},
			{ID: mSlow, Behavior: simulator.Behavior{Reply: slowReply, TokensPerSecond: 20}},
		},
	}
}

// e2eConfig is a proxy.toml for a simulator at simURL; chain is the
// [[models]] part.
func e2eConfig(simURL, chain string) string {
	return fmt.Sprintf(`listen = "127.0.0.1:0"

[upstream]
base_url = %q
api_key = %q
first_byte_timeout = "3s"
idle_timeout = "3s"
account_url = ""

[health]
probe_interval = "0s"

[[models]]
id = %q
aliases = ["auto"]
fallbacks = [%q]
%s`, simURL+"/v1", e2eKey, mDown, mHealthy, chain)
}

const chainAlphaFirst = `
[[models]]
id = "test/alpha"
aliases = ["pick"]
fallbacks = ["test/beta"]
`

const chainBetaFirst = `
[[models]]
id = "test/beta"
aliases = ["pick"]
fallbacks = ["test/alpha"]
`

// startSim serves sc on a loopback port until the test ends.
func startSim(t *testing.T, sc simulator.Scenario) (*simulator.Simulator, string) {
	t.Helper()
	sim := simulator.New(sc)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close) // first: unblocks hanging handlers
	return sim, srv.URL
}

// lines collects a subprocess's output line by line.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := slices.Index(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return len(p), nil
}

func (l *lines) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

func (l *lines) String() string { return strings.Join(l.Lines(), "\n") }

// proc is a running chutes-proxy.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *lines
	exited         chan struct{}
	err            error // set when exited is closed
	url            string
}

// startBinary runs chutes-proxy with args and an environment free of the
// caller's CHUTES_* and OPENAI_* variables, plus env. The process is killed
// when the test ends.
func startBinary(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binPath, args...), stdout: &lines{}, stderr: &lines{}, exited: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHUTES_") && !strings.HasPrefix(kv, "OPENAI_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("chutes-proxy %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), p.stdout, p.stderr)
		}
	})
	return p
}

// startProxy writes cfg to a temp proxy.toml and serves it, returning once
// the proxy listens.
func startProxy(t *testing.T, cfg string) (p *proc, cfgPath string) {
	t.Helper()
	cfgPath = filepath.Join(t.TempDir(), "proxy.toml")
	writeFile(t, cfgPath, cfg)
	p = startBinary(t, []string{"CHUTES_PROXY_LOG=json"}, "serve", "--config", cfgPath, "--listen", "127.0.0.1:0")
	p.waitFor(t, 10*time.Second, "the proxy to listen", func() bool {
		for _, e := range p.logs() {
			if e["msg"] == "chutes-proxy listening" {
				p.url = strings.TrimSuffix(fmt.Sprint(e["url"]), "/v1")
				return true
			}
		}
		return false
	})
	return p, cfgPath
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// logs returns the JSON log lines written so far.
func (p *proc) logs() []map[string]any {
	var out []map[string]any
	for _, l := range p.stderr.Lines() {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// logsWith returns the log entries whose msg starts with prefix.
func (p *proc) logsWith(prefix string) []map[string]any {
	var out []map[string]any
	for _, e := range p.logs() {
		if msg, _ := e["msg"].(string); strings.HasPrefix(msg, prefix) {
			out = append(out, e)
		}
	}
	return out
}

// waitFor polls cond until it holds, failing the test after timeout or if
// the process exits first.
func (p *proc) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case <-p.exited:
			if cond() {
				return
			}
			t.Fatalf("chutes-proxy exited (%v) while waiting for %s", p.err, what)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

// exitCode waits for the process to exit.
func (p *proc) exitCode(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		t.Fatalf("chutes-proxy still running %s after it was told to stop", timeout)
	}
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	t.Fatalf("waiting for chutes-proxy: %v", p.err)
	return -1
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// newClient is an openai-go client for baseURL (without /v1), with no
// retries, so that every count below is one request.
func newClient(t *testing.T, baseURL, key string) openai.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return openai.NewClient(
		option.WithBaseURL(baseURL+"/v1"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: tr}),
		option.WithRequestTimeout(15*time.Second),
	)
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello!")},
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestE2EChatFailsOverFromDeadModel(t *testing.T) {
	t.Parallel()
	sim, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	client := newClient(t, p.url, "anything: the proxy has its own key")

	var resp *http.Response
	c, err := client.Chat.Completions.New(testContext(t), chatParams("auto"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("X-Chutes-Proxy-Model"); got != mHealthy {
		t.Errorf("X-Chutes-Proxy-Model = %q, want %q", got, mHealthy)
	}
	if got := resp.Header.Get("X-Chutes-Proxy-Attempts"); got != "2" {
		t.Errorf("X-Chutes-Proxy-Attempts = %q, want 2 (the dead model, then its fallback)", got)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Error("no X-Request-Id")
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Content != healthyReply {
		t.Errorf("choices = %+v, want the healthy model's reply %q", c.Choices, healthyReply)
	}
	if n := sim.Requests(mDown); n != 1 {
		t.Errorf("the dead model got %d requests, want 1", n)
	}
	hdr, body := sim.LastRequest(mHealthy)
	if got := hdr.Get("Authorization"); got != "Bearer "+e2eKey {
		t.Errorf("upstream Authorization = %q, want the configured key", got)
	}
	var sent struct{ Model string }
	if err := json.Unmarshal(body, &sent); err != nil || sent.Model != mHealthy {
		t.Errorf("upstream body model = %q (%v), want the alias replaced by %q", sent.Model, err, mHealthy)
	}
}

func TestE2EStreamFailsOverFromDeadModel(t *testing.T) {
	t.Parallel()
	sim, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	client := newClient(t, p.url, "anything")

	var resp *http.Response
	stream := client.Chat.Completions.NewStreaming(testContext(t), chatParams("auto"), option.WithResponseInto(&resp))
	defer stream.Close()
	var content strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		for _, ch := range stream.Current().Choices {
			content.WriteString(ch.Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	if resp == nil {
		t.Fatal("no response")
	}
	if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/event-stream") {
		t.Errorf("Content-Type = %q", got)
	}
	if got := resp.Header.Get("X-Chutes-Proxy-Model"); got != mHealthy {
		t.Errorf("X-Chutes-Proxy-Model = %q, want %q", got, mHealthy)
	}
	if got := resp.Header.Get("X-Chutes-Proxy-Attempts"); got != "2" {
		t.Errorf("X-Chutes-Proxy-Attempts = %q, want 2", got)
	}
	if content.String() != healthyReply {
		t.Errorf("streamed content = %q, want %q", content.String(), healthyReply)
	}
	// A role chunk, one per word, a finish chunk.
	if want := len(strings.Fields(healthyReply)) + 2; chunks != want {
		t.Errorf("got %d chunks, want %d", chunks, want)
	}
	if n := sim.Requests(mDown); n != 1 {
		t.Errorf("the dead model got %d requests, want 1", n)
	}
}

// idCreated are the fields that differ between two answers to the same
// request.
var idCreated = regexp.MustCompile(`"id":"[^"]*"|"created":[0-9]+`)

// sameRequest blanks idCreated's fields, keeping the JSON valid.
func sameRequest(raw string) string {
	return idCreated.ReplaceAllStringFunc(raw, func(f string) string {
		if strings.HasPrefix(f, `"id"`) {
			return `"id":""`
		}
		return `"created":0`
	})
}

// TestE2EReasoningPassedIntact streams a reasoning model through the proxy
// and straight from the simulator: every chunk must be the same bytes
// (bar id and created), reasoning_content deltas included.
func TestE2EReasoningPassedIntact(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	params := chatParams(mReasoning)
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}

	collect := func(c openai.Client) []string {
		stream := c.Chat.Completions.NewStreaming(testContext(t), params)
		defer stream.Close()
		var raw []string
		for stream.Next() {
			raw = append(raw, sameRequest(stream.Current().RawJSON()))
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("stream error: %v", err)
		}
		return raw
	}
	viaProxy := collect(newClient(t, p.url, "anything"))
	direct := collect(newClient(t, simURL, e2eKey))
	if !slices.Equal(viaProxy, direct) {
		t.Errorf("chunks differ through the proxy:\nproxy:  %q\ndirect: %q", viaProxy, direct)
	}

	// And the reasoning is there, before the content, as openai-go sees it.
	var reasoning, content strings.Builder
	contentStarted, usage := false, false
	for _, r := range viaProxy {
		var ch openai.ChatCompletionChunk
		if err := json.Unmarshal([]byte(r), &ch); err != nil {
			t.Fatal(err)
		}
		if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
			usage = true
		}
		for _, c := range ch.Choices {
			if f, ok := c.Delta.JSON.ExtraFields["reasoning_content"]; ok && f.Raw() != "null" {
				var s string
				if err := json.Unmarshal([]byte(f.Raw()), &s); err != nil {
					t.Fatal(err)
				}
				if contentStarted && s != "" {
					t.Errorf("reasoning %q after content started", s)
				}
				reasoning.WriteString(s)
			}
			if c.Delta.Content != "" {
				contentStarted = true
			}
			content.WriteString(c.Delta.Content)
		}
	}
	if reasoning.String() != reasoningText {
		t.Errorf("reasoning_content = %q, want %q", reasoning.String(), reasoningText)
	}
	if content.String() != reasoningRply {
		t.Errorf("content = %q, want %q", content.String(), reasoningRply)
	}
	if !usage {
		t.Error("no usage chunk (stream_options.include_usage)")
	}

	// Not streamed: reasoning_content sits in the message.
	client := newClient(t, p.url, "anything")
	c, err := client.Chat.Completions.New(testContext(t), chatParams(mReasoning))
	if err != nil {
		t.Fatal(err)
	}
	f, ok := c.Choices[0].Message.JSON.ExtraFields["reasoning_content"]
	if !ok || f.Raw() != strconv.Quote(reasoningText) {
		t.Errorf("message reasoning_content = %v, want %q", f.Raw(), reasoningText)
	}
}

func TestE2EInterruptedStreamIsAnError(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	client := newClient(t, p.url, "anything")

	stream := client.Chat.Completions.NewStreaming(testContext(t), chatParams(mDrop))
	defer stream.Close()
	var content strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		for _, ch := range stream.Current().Choices {
			content.WriteString(ch.Delta.Content)
		}
	}
	err := stream.Err()
	if err == nil {
		t.Fatalf("the stream ended without an error after %d chunks (%q): the client would take a cut reply for a whole one", chunks, content.String())
	}
	if chunks == 0 || content.Len() == 0 {
		t.Errorf("got %d chunks (%q) before the error, want the part sent before the cut", chunks, content.String())
	}
	var se *ssestream.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("stream.Err() = %T %v, want the proxy's error event (*ssestream.StreamError)", err, err)
	}
	var ev struct {
		Error struct{ Message, Code string }
	}
	if err := json.Unmarshal(se.Event.Data, &ev); err != nil {
		t.Fatalf("error event %q: %v", se.Event.Data, err)
	}
	if ev.Error.Code != "stream_interrupted" || ev.Error.Message == "" {
		t.Errorf("error event = %s, want code stream_interrupted and a message", se.Event.Data)
	}
}

func TestE2EModelsListIncludesAliases(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, chainAlphaFirst))
	client := newClient(t, p.url, "anything")
	page, err := client.Models.List(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range page.Data {
		ids = append(ids, m.ID)
	}
	for _, want := range []string{mDown, mHealthy, mReasoning, "auto", "pick"} {
		if !slices.Contains(ids, want) {
			t.Errorf("models list %q lacks %q", ids, want)
		}
	}
}

func TestE2EPaymentRequiredIsAnOpenAIError(t *testing.T) {
	t.Parallel()
	sim, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	client := newClient(t, p.url, "anything")
	_, err := client.Chat.Completions.New(testContext(t), chatParams(mPay))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %T %v, want *openai.Error", err, err)
	}
	if apiErr.StatusCode != http.StatusPaymentRequired || apiErr.Code != "payment_required" {
		t.Errorf("status %d code %q, want 402 payment_required", apiErr.StatusCode, apiErr.Code)
	}
	if !strings.Contains(apiErr.Message, "balance") || !strings.Contains(apiErr.Message, "300 requests a day") {
		t.Errorf("message %q does not say that the balance or the daily quota is used up", apiErr.Message)
	}
	if _, ok := apiErr.JSON.ExtraFields["attempts"]; !ok {
		t.Errorf("no attempts in the error: %s", apiErr.RawJSON())
	}
	if n := sim.Requests(mPay); n != 1 {
		t.Errorf("the 402 model got %d requests, want 1: a 402 never fails over or retries", n)
	}
}

// TestE2ESigtermDrains stops the proxy in the middle of a stream: the
// stream must finish whole and the process exit 0.
func TestE2ESigtermDrains(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, ""))
	client := newClient(t, p.url, "anything")
	stream := client.Chat.Completions.NewStreaming(testContext(t), chatParams(mSlow))
	defer stream.Close()
	var content strings.Builder
	signalled := false
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			content.WriteString(ch.Delta.Content)
			if ch.Delta.Content != "" && !signalled {
				p.signal(t, syscall.SIGTERM)
				signalled = true
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream cut by SIGTERM: %v (got %q)", err, content.String())
	}
	if !signalled {
		t.Fatal("no content chunk arrived")
	}
	if content.String() != slowReply {
		t.Errorf("content = %q, want the whole reply %q", content.String(), slowReply)
	}
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if len(p.logsWith("chutes-proxy stopped")) != 1 {
		t.Error(`no "chutes-proxy stopped" log line`)
	}
}

// TestE2EReload edits the config under the running proxy: a valid edit
// takes effect for the next request, a broken one is logged and ignored,
// and SIGHUP reloads too.
func TestE2EReload(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, cfgPath := startProxy(t, e2eConfig(simURL, chainAlphaFirst))
	client := newClient(t, p.url, "anything")
	served := func() string {
		t.Helper()
		var resp *http.Response
		if _, err := client.Chat.Completions.New(testContext(t), chatParams("pick"), option.WithResponseInto(&resp)); err != nil {
			t.Fatal(err)
		}
		return resp.Header.Get("X-Chutes-Proxy-Model")
	}
	reloads := func(why string) int {
		n := 0
		for _, e := range p.logsWith("config reloaded") {
			if e["why"] == why {
				n++
			}
		}
		return n
	}

	if got := served(); got != mAlpha {
		t.Fatalf("served by %q, want %q", got, mAlpha)
	}

	// An edit (no signal): the watcher reloads within a second or two.
	writeFile(t, cfgPath, e2eConfig(simURL, chainBetaFirst))
	p.waitFor(t, 10*time.Second, "the edited config to be reloaded", func() bool { return reloads("file changed") == 1 })
	if got := served(); got != mBeta {
		t.Errorf("after reordering the chain: served by %q, want %q", got, mBeta)
	}

	// A typo: logged with the file and key, the running config stays.
	writeFile(t, cfgPath, strings.Replace(e2eConfig(simURL, chainAlphaFirst), "fallbacks = [\"test/beta\"]", "fallbaks = [\"test/beta\"]", 1))
	p.waitFor(t, 10*time.Second, "the broken config to be refused", func() bool { return len(p.logsWith("config not reloaded")) == 1 })
	e := p.logsWith("config not reloaded")[0]
	if probs := fmt.Sprint(e["problems"]); !strings.Contains(probs, cfgPath) || !strings.Contains(probs, "fallbaks") {
		t.Errorf("problems = %q, want the file and the misspelt key", probs)
	}
	if got := served(); got != mBeta {
		t.Errorf("after a broken edit: served by %q, want %q (the running config)", got, mBeta)
	}

	// Fixed, and then a SIGHUP (after the watcher's reload, whose pending
	// reload would otherwise swallow the signal's).
	writeFile(t, cfgPath, e2eConfig(simURL, chainAlphaFirst))
	p.waitFor(t, 10*time.Second, "the fixed config to be reloaded", func() bool { return reloads("file changed") == 2 })
	if got := served(); got != mAlpha {
		t.Errorf("after fixing the config: served by %q, want %q", got, mAlpha)
	}
	p.signal(t, syscall.SIGHUP)
	p.waitFor(t, 10*time.Second, "a reload on SIGHUP", func() bool { return reloads("SIGHUP") == 1 })
	if got := served(); got != mAlpha {
		t.Errorf("after SIGHUP: served by %q, want %q", got, mAlpha)
	}
}

// curlRequest is what one of the demo's curl lines asks for.
type curlRequest struct {
	url    string
	header http.Header
	body   string
	stream bool // -N
}

// parseCurl reads a curl command line as the demo prints it: words, and
// single-quoted strings as a POSIX shell reads them.
func parseCurl(t *testing.T, line string) curlRequest {
	t.Helper()
	var words []string
	var w strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			w.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, w.String())
	}
	if len(words) == 0 || words[0] != "curl" {
		t.Fatalf("not a curl line: %q", line)
	}
	c := curlRequest{header: http.Header{}}
	for i := 1; i < len(words); i++ {
		arg := func() string {
			i++
			if i >= len(words) {
				t.Fatalf("%s needs a value in %q", words[i-1], line)
			}
			return words[i]
		}
		switch words[i] {
		case "-sS", "-s", "-S":
		case "-N":
			c.stream = true
		case "-D":
			if v := arg(); v != "-" {
				t.Errorf("-D %s: want -D - (headers to stdout)", v)
			}
		case "-H":
			k, v, ok := strings.Cut(arg(), ":")
			if !ok {
				t.Fatalf("bad header in %q", line)
			}
			c.header.Add(k, strings.TrimSpace(v))
		case "-d":
			c.body = arg()
		default:
			if strings.HasPrefix(words[i], "-") || c.url != "" {
				t.Fatalf("unexpected %q in %q", words[i], line)
			}
			c.url = words[i]
		}
	}
	if !json.Valid([]byte(c.body)) {
		t.Errorf("-d is not JSON: %q", c.body)
	}
	return c
}

// TestE2EDemoAnswersItsCurlLines runs `chutes-proxy demo` (and its --outage
// and --resume variants), with a real key and upstream in the environment
// that it must ignore, and sends the requests its curl lines show.
func TestE2EDemoAnswersItsCurlLines(t *testing.T) {
	for _, tt := range []struct {
		flag   string
		curls  int
		served func(model string, attempts int) bool // what the headers must say
	}{
		{"", 2, func(m string, n int) bool { return m != "" && m != "deepseek-ai/DeepSeek-R1" && n >= 2 }}, // a failover
		{"--outage", 2, func(m string, n int) bool { return m == "local:llama3.1:8b" && n >= 1 }},          // another provider
		{"--resume", 1, func(m string, n int) bool { return m != "" && n >= 1 }},                           // a whole reply
	} {
		t.Run("demo"+tt.flag, func(t *testing.T) {
			t.Parallel()
			testDemoCurls(t, tt.flag, tt.curls, tt.served)
		})
	}
}

func testDemoCurls(t *testing.T, flag string, want int, served func(string, int) bool) {
	args := []string{"demo", "--listen", "127.0.0.1:0"}
	if flag != "" {
		args = append(args, flag)
	}
	p := startBinary(t, []string{
		"CHUTES_API_KEY=cpk_real_key_that_must_not_be_used",
		"CHUTES_PROXY_UPSTREAM=http://127.0.0.1:9/v1",
		"CHUTES_PROXY_CONFIG=/nonexistent/proxy.toml",
	}, args...)
	var curls []string
	p.waitFor(t, 10*time.Second, "the demo's curl lines", func() bool {
		curls = curls[:0]
		for _, l := range p.stdout.Lines() {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "curl ") {
				curls = append(curls, l)
			}
		}
		return strings.Contains(p.stdout.String(), "Ctrl-C")
	})
	if len(curls) != want {
		t.Fatalf("want %d curl lines, got %q", want, curls)
	}
	out := p.stdout.String()
	status := regexp.MustCompile(`status page\s+(http://\S+/)`).FindStringSubmatch(out)
	if status == nil {
		t.Fatalf("no status page URL in:\n%s", out)
	}

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 15 * time.Second}
	for i, line := range curls {
		c := parseCurl(t, line)
		if c.stream != (i == want-1) {
			t.Errorf("curl line %d: -N = %v, want the last line to stream", i+1, c.stream)
		}
		if !strings.HasPrefix(c.url, strings.TrimSuffix(status[1], "/")) {
			t.Errorf("curl URL %q is not on the proxy %q", c.url, status[1])
		}
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, c.url, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = c.header
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("curl line %d: reading: %v", i+1, err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("curl line %d: status %d: %s", i+1, resp.StatusCode, body)
		}
		model := resp.Header.Get("X-Chutes-Proxy-Model")
		attempts, _ := strconv.Atoi(resp.Header.Get("X-Chutes-Proxy-Attempts"))
		t.Logf("curl line %d: served by %s after %d attempts", i+1, model, attempts)
		// The breaker opens after 3 failures; these are the first two
		// requests, so both tried the dead model first.
		if !served(model, attempts) {
			t.Errorf("curl line %d: X-Chutes-Proxy-Model %q after %d attempts", i+1, model, attempts)
		}
		if c.stream {
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("streaming line: Content-Type %q", ct)
			}
			if !strings.HasSuffix(strings.TrimSpace(string(body)), "data: [DONE]") {
				t.Errorf("streaming line: body does not end with data: [DONE]:\n%s", body)
			}
		} else {
			var cc openai.ChatCompletion
			if err := json.Unmarshal(body, &cc); err != nil || len(cc.Choices) == 0 || cc.Choices[0].Message.Content == "" {
				t.Errorf("plain line: not a chat completion with content (%v): %s", err, body)
			}
		}
	}

	p.signal(t, os.Interrupt) // Ctrl-C
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("demo exit code %d after Ctrl-C, want 0", code)
	}
}

func TestE2EDemoPortBusy(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p := startBinary(t, nil, "demo", "--listen", ln.Addr().String())
	if code := p.exitCode(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if errOut := p.stderr.String(); !strings.Contains(errOut, ln.Addr().String()) || !strings.Contains(errOut, "--listen") {
		t.Errorf("stderr does not name the busy port and the --listen fix:\n%s", errOut)
	}
}

func TestE2ESimulate(t *testing.T) {
	t.Parallel()
	scenario := filepath.Join("..", "..", "internal", "simulator", "testdata", "scenario.toml")
	p := startBinary(t, nil, "simulate", "--listen", "127.0.0.1:0", "--scenario", scenario)
	var base string
	re := regexp.MustCompile(`Simulated Chutes API on (http://\S+/v1)`)
	p.waitFor(t, 10*time.Second, "the simulator's URL", func() bool {
		m := re.FindStringSubmatch(p.stdout.String())
		if m != nil && strings.Contains(p.stdout.String(), "Ctrl-C") {
			base = m[1]
			return true
		}
		return false
	})
	out := p.stdout.String()
	for _, want := range []string{
		"deepseek-ai/DeepSeek-R1", "down: 503",
		"Qwen/Qwen2.5-72B-Instruct", "flaky: 503 for 30% of requests",
		"Qwen/Qwen3-14B", "drop_after: stream cut after 5 events",
		"any other model",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}

	sc, err := simulator.LoadScenario(scenario)
	if err != nil {
		t.Fatal(err)
	}
	client := newClient(t, strings.TrimSuffix(base, "/v1"), "cpk_test")
	page, err := client.Models.List(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, m := range page.Data {
		got = append(got, m.ID)
	}
	for _, m := range sc.Models {
		if m.Kind != simulator.KindNotFound {
			want = append(want, m.ID)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("models = %q, want %q", got, want)
	}
	_, err = client.Chat.Completions.New(testContext(t), chatParams("Qwen/Qwen3-32B"))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusPaymentRequired {
		t.Errorf("payment_required model: err = %v, want a 402", err)
	}

	p.signal(t, os.Interrupt)
	if code := p.exitCode(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after Ctrl-C, want 0", code)
	}
}

func TestE2ESimulateBadScenario(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, path, "[[models]]\nid = \"a/b\"\nkind = \"sleepy\"\n")
	p := startBinary(t, nil, "simulate", "--listen", "127.0.0.1:0", "--scenario", path)
	if code := p.exitCode(t, 10*time.Second); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if errOut := p.stderr.String(); !strings.Contains(errOut, path+":models[0].kind:") {
		t.Errorf("stderr does not name the file and key:\n%s", errOut)
	}
}

// TestE2EHelp checks that both commands document their flags.
func TestE2EHelp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		cmd   string
		flags []string
	}{
		{"demo", []string{"-listen", "127.0.0.1:8787"}},
		{"simulate", []string{"-listen", "-scenario"}},
	} {
		t.Run(tt.cmd, func(t *testing.T) {
			p := startBinary(t, nil, tt.cmd, "--help")
			if code := p.exitCode(t, 10*time.Second); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			out := p.stdout.String()
			for _, f := range append([]string{"Usage: chutes-proxy " + tt.cmd}, tt.flags...) {
				if !strings.Contains(out, f) {
					t.Errorf("--help lacks %q:\n%s", f, out)
				}
			}
		})
	}
}
