package clients

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestUpstreamCORSHeadersDropped: CORS is the proxy's decision
// ([compat] cors_origins), not the upstream's. An upstream answering with
// its own Access-Control-Allow-Origin: * must not open the proxy to every
// web page.
func TestUpstreamCORSHeadersDropped(t *testing.T) {
	f := newFake(t, r1)
	f.set(r1, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "*")
		chatReply(r1, "hi")(w, r)
	})
	for _, origins := range [][]string{nil, {janitor}} {
		base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = origins }))
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
			strings.NewReader(`{"model":"`+r1+`","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
			t.Errorf("cors_origins %v: a page from https://evil.example may read the reply: Access-Control-Allow-Origin %q", origins, v)
		}
	}
}
