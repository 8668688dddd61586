package chutes

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// TestProbeSteps probes loopback servers that fail at each step and checks
// that the failed step is named, with the facts of the failure.
func TestProbeSteps(t *testing.T) {
	list := `{"object":"list","data":[{"id":"a/b","context_length":4096},{"id":"c/d"}]}`
	serve := func(code int, body string) string {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, body)
		}))
		t.Cleanup(s.Close)
		return s.URL
	}
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake fails on purpose
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	noDNS := &http.Transport{DialContext: (&net.Dialer{Resolver: &net.Resolver{PreferGo: true,
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("no DNS server here") },
	}}).DialContext}

	tests := []struct {
		name      string
		base      string
		transport http.RoundTripper
		step      string
		errHas    []string
	}{
		{name: "ok", base: serve(200, list) + "/v1"},
		{name: "dns", base: "http://chutes-probe.test/v1", transport: noDNS, step: StepDNS, errHas: []string{"chutes-probe.test"}},
		{name: "connect", base: closed.URL + "/v1", step: StepConnect, errHas: []string{"connection failed"}},
		{name: "tls", base: tlsSrv.URL + "/v1", step: StepTLS, errHas: []string{"certificate"}},
		{name: "busy", base: serve(503, `{"detail":"busy"}`) + "/v1", step: StepHTTP, errHas: []string{"/v1/models", "503", "busy"}},
		{name: "not found", base: serve(404, `{"detail":"Not Found"}`), step: StepResponse, errHas: []string{"404"}},
		{name: "a web page", base: serve(200, `<html>welcome</html>`), step: StepResponse, errHas: []string{"200", "HTML page"}},
		{name: "a captive portal", base: serve(403, `<html>log in</html>`), step: StepResponse, errHas: []string{"403"}},
		{name: "a gateway's error page", base: serve(502, `<html>bad gateway</html>`), step: StepHTTP, errHas: []string{"502"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.transport
			if tr == nil {
				tr = &http.Transport{}
			}
			defer tr.(*http.Transport).CloseIdleConnections()
			r, entries := Probe(context.Background(), &http.Client{Transport: tr}, config.Target{BaseURL: tt.base})
			if r.FailedStep != tt.step || r.OK() != (tt.step == "") {
				t.Fatalf("probe = %+v, want step %q", r, tt.step)
			}
			for _, w := range tt.errHas {
				if !strings.Contains(r.Error, w) {
					t.Errorf("error %q lacks %q", r.Error, w)
				}
			}
			if tt.step != "" {
				if entries != nil {
					t.Errorf("a failed probe returned %d entries", len(entries))
				}
				return
			}
			if r.Models != 2 || len(entries) != 2 || entries[0].ContextLength != 4096 || r.Status != 200 ||
				r.ConnectMS == nil || r.TTFBMS == nil || r.TLSMS != nil || r.DNSMS != nil {
				t.Fatalf("probe = %+v, entries %+v", r, entries)
			}
		})
	}
}

// TestProbeSendsTheKey: the target's key goes in the Authorization header
// with its own headers, no key means no Authorization header at all, and
// the probe leaves the client's pool alone.
func TestProbeSendsTheKey(t *testing.T) {
	var got http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		io.WriteString(w, `{"data":[]}`)
	}))
	defer srv.Close()
	target := config.Target{BaseURL: srv.URL + "/v1/", Key: "cpk_k", Headers: map[string]string{"X-Title": "chutes-proxy"}}
	if r, _ := Probe(context.Background(), srv.Client(), target); !r.OK() || r.URL != srv.URL+"/v1/models" ||
		got.Get("Authorization") != "Bearer cpk_k" || got.Get("X-Title") != "chutes-proxy" {
		t.Fatalf("probe %+v, headers %v", r, got)
	}
	if r, _ := Probe(context.Background(), srv.Client(), config.Target{BaseURL: srv.URL + "/v1"}); !r.OK() || got["Authorization"] != nil {
		t.Fatalf("probe %+v without a key sent Authorization %q", r, got["Authorization"])
	}
}

// TestProbeKeyRefused: a 401 is an HTTP answer whose words are kept for the
// caller that explains them.
func TestProbeKeyRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"No auth credentials found","code":401}}`)
	}))
	defer srv.Close()
	r, _ := Probe(context.Background(), srv.Client(), config.Target{BaseURL: srv.URL, Key: "sk-or-bad"})
	if r.FailedStep != StepHTTP || r.Status != http.StatusUnauthorized || r.Reason != "No auth credentials found" {
		t.Fatalf("probe = %+v", r)
	}
}

// hang is a transport whose answer never comes.
type hang struct{}

func (hang) RoundTrip(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// TestProbeTimesOut: a probe that gets no answer gives up after 20 s and
// says so (in a bubble: no real time passes).
func TestProbeTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		r, _ := Probe(context.Background(), &http.Client{Transport: hang{}}, config.Target{BaseURL: "https://llm.chutes.ai/v1"})
		if r.FailedStep != StepTimeout || !strings.Contains(r.Error, "no answer within 20s") || time.Since(start) != probeTimeout {
			t.Fatalf("probe = %+v after %v", r, time.Since(start))
		}
	})
}
