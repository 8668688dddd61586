package clients

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// TestNodeSDKProtectedReplies runs node/replies.test.mjs with the openai npm
// client against the proxy's ways of protecting replies, in front of the
// simulator: plain requests streamed upstream and assembled (stream_plain),
// cut streams resumed (resume_streams), and another provider serving when
// Chutes' model is down. The client must read assembled replies (text,
// reasoning, tool calls), a resumed stream and the other provider's reply
// without error, each as one whole reply.
func TestNodeSDKProtectedReplies(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the openai npm client test is skipped")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "openai", "package.json")); err != nil {
		t.Skip("test/clients/node/node_modules is missing: run `npm ci --prefix test/clients/node`")
	}
	const reply = "one two three four five six seven eight nine ten eleven twelve thirteen"
	sim := simulator.New(simulator.Scenario{AcceptAnyKey: true, Models: []simulator.ModelScenario{
		{ID: "cut/one", Behavior: simulator.Behavior{Kind: simulator.KindDropAfter, DropAfter: 4, Reply: reply}},
		{ID: "good/two", Behavior: simulator.Behavior{Reply: reply}},
		{ID: "think/m", Behavior: simulator.Behavior{Reply: reply, Reasoning: "first I think"}},
		{ID: "tools/m", Behavior: simulator.Behavior{ToolCalls: 2}},
		{ID: "dead/one", Behavior: simulator.Behavior{Kind: simulator.KindDown}},
	}})
	up := httptest.NewServer(sim)
	defer up.Close()
	defer sim.Close()
	// Another provider, as a local model server with its own key.
	other := simulator.New(simulator.Scenario{Keys: []string{"sk-local-key-123456"}, Models: []simulator.ModelScenario{
		{ID: "llm", Behavior: simulator.Behavior{Reply: "from another provider"}}}})
	op := httptest.NewServer(other)
	defer op.Close()
	defer other.Close()
	base := startProxy(t, newConfig(t, up.URL, func(c *config.Config) {
		c.Upstream.StreamPlain = true
		c.Failover.ResumeStreams = true
		c.Providers = []config.Provider{{Name: "local", BaseURL: op.URL + "/v1", APIKey: "sk-local-key-123456"}}
		c.Models = []config.Model{
			{ID: "cut/one", Aliases: []string{"cutting"}, Fallbacks: []string{"good/two"}},
			{ID: "dead/one", Aliases: []string{"outage"}, Fallbacks: []string{"local:llm"}},
		}
	}))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-timeout=30000", "replies.test.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+base+"/v1", "OPENAI_API_KEY=sk-anything", "NO_COLOR=1", "REPLY="+reply)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test replies.test.mjs: %v\n%s", err, out)
	}
	t.Logf("node --test replies.test.mjs:\n%s", out)
	if n := sim.Requests("cut/one"); n < 2 {
		t.Errorf("cut/one asked %d times: the stream was not resumed", n)
	}
	if h, _ := other.LastRequest("llm"); h.Get("Authorization") != "Bearer sk-local-key-123456" {
		t.Errorf("the other provider received Authorization %q", h.Get("Authorization"))
	}
}
