package clients

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestChatPostedToBareBase: an app that posts to the URL exactly as entered
// (JanitorAI's "Proxy URL") with only the base URL typed in is served as a
// chat completion.
func TestChatPostedToBareBase(t *testing.T) {
	f := newFake(t, r1)
	f.set(r1, chatReply(r1, "hi"))
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = []string{janitor} }))
	for _, p := range []string{"/v1", "/v1/", "/"} {
		resp, b := jaiSend(t, http.MethodPost, base+p, jaiBody(false))
		if resp.StatusCode != 200 || !strings.Contains(string(b), "hi") {
			t.Errorf("POST %s: %d %s", p, resp.StatusCode, b)
		}
	}
}
