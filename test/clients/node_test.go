package clients

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// nodeDir holds the Node project whose tests use the openai npm package.
const nodeDir = "node"

// TestNodeSDK starts the proxy in front of a fake Chutes and runs
// node/openai.test.mjs (node --test) against it with OPENAI_BASE_URL set,
// as a user of the openai npm package would. It needs node and
// node/node_modules (npm ci --prefix test/clients/node); without them it
// skips.
func TestNodeSDK(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the openai npm client test is skipped")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "openai", "package.json")); err != nil {
		t.Skip("test/clients/node/node_modules is missing: run `npm ci --prefix test/clients/node` to run the openai npm client test")
	}

	f := newFake(t, r1, mistral)
	f.set("a/down", down)
	f.set("b/ok", chatReply("b/ok", "Hello ", "from the ", "fallback."))
	f.set("pay/one", status(402, `{"detail":"Quota exceeded and account balance is $0.0, please pay with fiat or send tao to 5Exyz"}`))
	f.set("down/all", down)
	f.set("down/two", down)
	f.set("echo/tools", echoTools)
	f.set("echo/format", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ResponseFormat json.RawMessage `json:"response_format"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		writeStatus(w, http.StatusOK, chatJSON("echo/format", string(req.ResponseFormat)))
	})
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
		c.Models = []config.Model{
			{ID: "a/down", Aliases: []string{"auto"}, Fallbacks: []string{"b/ok"}},
			{ID: r1, Aliases: []string{"r1"}},
			{ID: "down/all", Fallbacks: []string{"down/two"}},
		}
	}))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-timeout=30000", "openai.test.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(),
		"OPENAI_BASE_URL="+base+"/v1",
		"OPENAI_API_KEY=sk-anything", // the proxy holds the Chutes key
		"NO_COLOR=1",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test openai.test.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test openai.test.mjs:\n%s", out)

	// The Node tests looked at the client's side; this is Chutes' side.
	if up := f.last(t, "echo/tools"); up.Header.Get("Authorization") != "Bearer "+testKey {
		t.Errorf("Chutes received Authorization %q", up.Header.Get("Authorization"))
	}
	for _, m := range []string{"a/down", "b/ok", "pay/one", "down/all", "down/two", "echo/format"} {
		f.last(t, m)
	}
}

// echoTools answers with one tool call whose arguments are the raw "tools"
// and "tool_choice" values of the request, so that the client can compare
// them with what it sent; streamed in three pieces when asked.
func echoTools(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Stream     bool            `json:"stream"`
		Tools      json.RawMessage `json:"tools"`
		ToolChoice json.RawMessage `json:"tool_choice"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	args := `{"tools":` + string(req.Tools) + `,"tool_choice":` + string(req.ToolChoice) + `}`
	str := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	const head = `{"id":"chatcmpl-e","object":"chat.completion.chunk","created":1700000000,"model":"echo/tools","choices":[{"index":0,"delta":`
	if !req.Stream {
		writeStatus(w, http.StatusOK, `{"id":"chatcmpl-e","object":"chat.completion","created":1700000000,"model":"echo/tools","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_echo","type":"function","function":{"name":"get_weather","arguments":`+str(args)+`}}]},"finish_reason":"tool_calls"}]}`)
		return
	}
	// Split on characters, not bytes: the description has non-ASCII text.
	rs := []rune(args)
	third := len(rs) / 3
	events := []string{
		head + `{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_echo","type":"function","function":{"name":"get_weather","arguments":` + str(string(rs[:third])) + `}}]},"finish_reason":null}]}`,
		head + `{"tool_calls":[{"index":0,"function":{"arguments":` + str(string(rs[third:2*third])) + `}}]},"finish_reason":null}]}`,
		head + `{"tool_calls":[{"index":0,"function":{"arguments":` + str(string(rs[2*third:])) + `}}]},"finish_reason":null}]}`,
		head + `{},"finish_reason":"tool_calls"}]}`,
	}
	sseReply(0, events...)(w, r)
}
