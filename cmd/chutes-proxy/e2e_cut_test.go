//go:build unix

package main

import (
	"errors"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestE2EPlainResponseCutBeforeAnyByteReachedClient: a non-stream answer
// that the upstream cuts midway (simulator drop_after, not streamed:
// Content-Length of the whole body, half of it, then the cut) reaches the
// client as a closed connection with no status line at all, although not
// one byte had gone to the client: the proxy commits at the upstream's first
// byte, relayPlain's writes sit in net/http's 4 KiB response buffer, and
// panic(http.ErrAbortHandler) discards them. The contract wants either a
// failover (nothing reached the client) or an OpenAI-shaped error.
func TestE2EPlainResponseCutBeforeAnyByteReachedClient(t *testing.T) {
	t.Parallel()
	_, simURL := startSim(t, e2eScenario())
	p, _ := startProxy(t, e2eConfig(simURL, `
[[models]]
id = "Qwen/Qwen3-14B"
aliases = ["cut"]
fallbacks = ["chutesai/Mistral-Small-3.1-24B-Instruct-2503"]
`))
	client := newClient(t, p.url, "anything")
	var resp *http.Response
	c, err := client.Chat.Completions.New(testContext(t), chatParams("cut"), option.WithResponseInto(&resp))
	var apiErr *openai.Error
	switch {
	case err == nil:
		if got := resp.Header.Get("X-Chutes-Proxy-Model"); got != mHealthy || c.Choices[0].Message.Content != healthyReply {
			t.Errorf("served by %q: %+v, want the fallback's reply", got, c.Choices)
		}
	case errors.As(err, &apiErr):
		t.Logf("OpenAI-shaped error %d %s: %s", apiErr.StatusCode, apiErr.Code, apiErr.Message)
	default:
		t.Errorf("err = %T %v: the client got neither an answer nor an OpenAI-shaped error", err, err)
	}
}
