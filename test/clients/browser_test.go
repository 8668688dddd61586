package clients

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// chatPage is a web front end on an origin of its own, like JanitorAI's:
// run(base) streams a chat reply from the proxy with fetch and a
// ReadableStream reader, writes the text into #out as it arrives, and
// returns what happened.
const chatPage = `<!doctype html>
<meta charset="utf-8">
<title>chat page</title>
<pre id="out"></pre>
<p id="status">idle</p>
<script>
async function run(base) {
  const out = document.getElementById("out");
  const status = document.getElementById("status");
  out.textContent = "";
  status.textContent = "running";
  let reads = 0;
  try {
    const resp = await fetch(base + "/v1/chat/completions", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer cpk_user0123456789abcdef"},
      body: JSON.stringify({model: "a/stream", stream: true, messages: [{role: "user", content: "hi"}]}),
    });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      reads++;
      buf += decoder.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const delta = JSON.parse(line.slice(6)).choices[0].delta.content;
          if (delta) out.textContent += delta;
        }
      }
    }
    status.textContent = "done";
    return {ok: true, status: resp.status, text: out.textContent, reads: reads,
            model: resp.headers.get("X-Chutes-Proxy-Model") || ""};
  } catch (e) {
    status.textContent = "error: " + e;
    return {ok: false, error: String(e), text: out.textContent, reads: reads};
  }
}
</script>
`

// pageResult is what run() returns.
type pageResult struct {
	OK     bool   `json:"ok"`
	Status int    `json:"status"`
	Text   string `json:"text"`
	Reads  int    `json:"reads"`
	Model  string `json:"model"`
	Error  string `json:"error"`
}

// chromium finds Debian's chromium (CI installs it) or another Chrome.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on this machine (apt-get install chromium): browser test skipped")
	return ""
}

// startBrowser starts one headless browser for the test and returns a
// context that has run it; derive a tab per case with chromedp.NewContext.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	path := chromium(t)
	// A fresh profile every run. Chrome's helpers can still write there for
	// a moment after the browser exits, so removal is retried.
	dir, err := os.MkdirTemp("", "chutes-proxy-chromium")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the retry's period
		}
	})
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Loopback only, whatever the machine's proxy settings say.
		chromedp.Flag("no-proxy-server", true),
	)
	t.Cleanup(cancelAlloc) // runs last: kills the browser and waits for it
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	// The first Run starts the browser; no time-out on it, or the time-out
	// would end the browser too.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return ctx
}

// TestBrowserStreamCORS loads a page from one loopback origin that streams
// a chat reply from the proxy on another: the reply arrives in pieces when
// the page's origin is in cors_origins, and fetch fails without it (the
// preflight gets no CORS headers), before any request reaches Chutes.
func TestBrowserStreamCORS(t *testing.T) {
	browser := startBrowser(t)
	page := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(chatPage))
	}))
	pieces := []string{"Streaming ", "through ", "the proxy, ", "piece by piece."}

	tests := []struct {
		name    string
		origins []string
		allowed bool
	}{
		{"origin allowed", []string{"https://janitorai.com", page}, true},
		{"origin not allowed", []string{"https://janitorai.com"}, false},
		{"no cors_origins", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, "a/stream")
			f.set("a/stream", sseReply(100*time.Millisecond, chatChunks("a/stream", pieces...)...))
			base := startProxy(t, newConfig(t, f.URL, func(c *config.Config) {
				c.Upstream.APIKey = ""
				c.Compat.CORSOrigins = tt.origins
			}))

			ctx, cancel := context.WithTimeout(browser, 30*time.Second)
			defer cancel()
			ctx, cancel = chromedp.NewContext(ctx)
			defer cancel()
			if err := chromedp.Do(ctx, chromedp.Navigate(page+"/chat.html")); err != nil {
				t.Fatal(err)
			}
			res, err := chromedp.Run(ctx, chromedp.Evaluate[pageResult](`run("`+base+`")`, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatal(err)
			}
			status, err := chromedp.Run(ctx, chromedp.Text("#status"))
			if err != nil {
				t.Fatal(err)
			}
			shown, err := chromedp.Run(ctx, chromedp.TextContent("#out"))
			if err != nil {
				t.Fatal(err)
			}

			if !tt.allowed {
				if res.OK || !strings.Contains(res.Error, "Failed to fetch") || !strings.HasPrefix(status, "error:") || shown != "" {
					t.Errorf("the page was not blocked: %+v, status %q, shown %q", res, status, shown)
				}
				if n := len(f.requests()); n != 0 {
					t.Errorf("Chutes received %d requests from a blocked page", n)
				}
				return
			}
			want := strings.Join(pieces, "")
			if !res.OK || res.Status != 200 || res.Text != want || shown != want || status != "done" {
				t.Fatalf("page: %+v, status %q, shown %q", res, status, shown)
			}
			// Separate reads: the events reached the page as they were sent,
			// not in one piece at the end.
			if res.Reads < 2 {
				t.Errorf("the reply arrived in %d read(s); the stream was buffered", res.Reads)
			}
			if res.Model != "a/stream" {
				t.Errorf("X-Chutes-Proxy-Model not readable by the page: %q", res.Model)
			}
			if up := f.last(t, "a/stream"); up.Header.Get("Authorization") != "Bearer cpk_user0123456789abcdef" || up.Header.Get("Origin") != "" {
				t.Errorf("Chutes received %v", up.Header)
			}
		})
	}
}
