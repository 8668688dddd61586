package health_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chutes-proxy/chutes-proxy/internal/simulator"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

func TestPageIsSelfContained(t *testing.T) {
	h := newHarness(t)
	body, hdr := h.get(t, "/")
	if ct := hdr.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("CSP %q", csp)
	}
	// No CDN, no external script, style, font or image.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(body); m != "" {
		t.Fatalf("page loads something external: %q", m)
	}
	for _, want := range []string{`fetch("status"`, "setInterval(refresh", `id="models"`, `id="headline"`, `id="chains"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	resp, err := h.client.Post(h.url+"/status", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /status: %d", resp.StatusCode)
	}
}

// TestPageInBrowser loads the status page in headless Chromium, checks the
// table shows the first model's breaker closed, makes that model fail
// through the proxy until its breaker opens, and checks that the page shows
// it (and the new headline and chain) without a reload. It saves a
// screenshot and logs its path.
func TestPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
	}
	start := time.Now()
	h := newHarness(t)
	h.chat(t, "auto") // a sample, so the table has numbers

	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()

	row := `tr[data-model="` + mHead + `"]`
	stateSel := chromedp.CSS(row + ` td.state span`)
	text := func(sel chromedp.CSS) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return v
	}
	if err := chromedp.Do(bctx,
		chromedp.Navigate(h.url+"/"),
		chromedp.WaitVisible(stateSel),
	); err != nil {
		t.Fatalf("loading the page: %v", err)
	}
	// A marker that a reload would wipe out.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.__noReload = 42`)); err != nil {
		t.Fatal(err)
	}
	if state, headline := text(stateSel), text(chromedp.CSS(`#headline`)); state != "closed" || !strings.Contains(headline, "All 3 models are available") {
		t.Fatalf("before: state %q headline %q", state, headline)
	}

	h.sim.SetBehavior(mHead, simulator.Behavior{Kind: simulator.KindDown})
	for range h.cfg.Breaker.Failures {
		if code, by := h.chat(t, "auto"); code != 200 || by != mBack {
			t.Fatalf("chat: %d by %q", code, by)
		}
	}

	waited := time.Now()
	if _, err := chromedp.Run(bctx, chromedp.Poll[chromedp.Void](
		`document.querySelector('`+row+` td.state span').textContent === "open"`,
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("waiting for the page to show the open breaker: %v", err)
	}
	t.Logf("the page showed the open breaker %v after it opened, without a reload", time.Since(waited).Round(time.Millisecond))
	marker, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.__noReload || 0`))
	if err != nil {
		t.Fatal(err)
	}
	state, available := text(stateSel), text(chromedp.CSS(row+` td.available`))
	headline, serving := text(chromedp.CSS(`#headline`)), text(chromedp.CSS(`.chain .link.serving`))
	if state != "open" || !strings.HasPrefix(available, "no") || marker != 42 {
		t.Fatalf("after: state %q available %q marker %d (0 means the page reloaded)", state, available, marker)
	}
	if !strings.Contains(headline, mHead+" is down (no instances available), requests go to "+mBack) || serving != mBack {
		t.Fatalf("after: headline %q serving %q", headline, serving)
	}

	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(os.TempDir(), "chutes-proxy-status-page.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page with %s's breaker open: %s (%d bytes); test took %v",
		mHead, path, len(shot), time.Since(start).Round(time.Millisecond))
}
