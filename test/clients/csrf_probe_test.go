package clients

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestForeignOriginSimpleRequest: a page on any site can send a "simple"
// cross-origin POST (Content-Type text/plain, no preflight) to
// http://127.0.0.1:8787. The browser hides the answer, but the request
// itself spends the user's Chutes quota with the proxy's key.
func TestForeignOriginSimpleRequest(t *testing.T) {
	f := newFake(t, r1)
	f.set(r1, chatReply(r1, "hi"))
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = []string{janitor} }))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"`+r1+`","messages":[{"role":"user","content":"spend my quota"}]}`))
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := len(f.requests()); n != 0 || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cross-site page's request was forwarded to Chutes (%d upstream requests), status %d", n, resp.StatusCode)
	}
}

// TestBrowserForeignPageSpendsQuota: the same in a real browser. A page from
// an origin that is not in cors_origins sends a no-cors POST; fetch resolves
// with an opaque response, and Chutes has been asked with the proxy's key.
func TestBrowserForeignPageSpendsQuota(t *testing.T) {
	browser := startBrowser(t)
	page := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><script>
async function attack(base) {
  await fetch(base + "/v1/chat/completions", {method: "POST", mode: "no-cors",
    body: JSON.stringify({model: "deepseek-ai/DeepSeek-R1", messages: [{role: "user", content: "spend"}]})});
  return "sent";
}</script>`))
	}))
	f := newFake(t, r1)
	f.set(r1, chatReply(r1, "hi"))
	base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) { c.Compat.CORSOrigins = []string{janitor} }))
	ctx, cancel := context.WithTimeout(browser, 30*time.Second)
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(page+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`attack("`+base+`")`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("a page from %s made the proxy call Chutes %d time(s) with the configured key", page, n)
	}
}
