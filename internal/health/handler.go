package health

import (
	_ "embed"
	"encoding/json"
	"net/http"
)

// page is the status page: one self-contained file (no CDN, no build step)
// that polls /status every few seconds.
//
//go:embed page.html
var page []byte

// pageCSP lets the page run its own inline script and style and fetch
// /status, nothing else.
const pageCSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves "/" (the page), "/status" (JSON) and "/metrics"
// (Prometheus text), reading r's breakers, limiters and chains; it is
// proxy.Options.Pages. None of them shows the key beyond its redacted
// prefix.
func (m *Monitor) Handler(r Router) http.Handler {
	// The mux answers other methods with 405 and an Allow header.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP)
		h.Set("Referrer-Policy", "no-referrer")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		b, err := json.MarshalIndent(m.status(r), "", "  ")
		if err != nil {
			http.Error(w, "status: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
	})
	mux.Handle("GET /metrics", m.metrics.handler(m, r))
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, req)
	})
}

// Served counts one chat, completion or embedding request by the model
// that served it ("" = none) and its outcome ("served" or the error code).
// The proxy calls it once per request, after the response (proxy.Options.Done).
func (m *Monitor) Served(model, outcome string) {
	label := "none"
	if model != "" {
		label = m.label(model)
	}
	if len(outcome) > 40 {
		outcome = "other"
	}
	m.metrics.requests.WithLabelValues(label, outcome).Inc()
}

// Resumed counts one stream resumed after a cut (resume_streams): from is
// the model that was cut, to the one that continued it (the same model when
// it was asked again). It is proxy.Options.Resumed.
func (m *Monitor) Resumed(from, to string) {
	m.metrics.resumes.WithLabelValues(m.label(from), m.label(to)).Inc()
}
