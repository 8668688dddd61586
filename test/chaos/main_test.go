// Package chaos runs chutes-proxy against upstreams and clients that
// misbehave on purpose: resets, silences, drips, broken framing, hostile
// requests, slowloris, vanishing clients. Everything is loopback, bounded by
// short time-outs, and stops by itself.
//
// Every proxy here runs behind the real http.Server of proxy.HTTPServer with
// a recognisable upstream key and proxy_key. Its log lines (the http.Server's
// ErrorLog included, where recovered panics go) and every response byte the
// clients read are captured; TestMain greps them all for the keys and for
// "panic" once the suite is done, then checks for leaked goroutines.
package chaos

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// The keys are recognisable so that a grep finds any copy; Redact keeps only
// their first six characters ("cpk_CH…", "pk-CHA…"), so the canaries below
// cannot appear in a properly redacted line.
const (
	upstreamKey = "cpk_CHAOSKEY.0123456789abcdef.LEAKCANARY1"
	proxyKey    = "pk-CHAOSPROXYKEY-LEAKCANARY2"
)

// canaries are substrings of the keys that redaction never shows.
var canaries = []string{"CHAOSKEY", "LEAKCANARY1", "CHAOSPROXYKEY", "LEAKCANARY2"}

// sink collects every byte the suite observed from the proxy: logs,
// response headers and bodies, command output.
type sink struct {
	mu    sync.Mutex
	parts []part
}

type part struct {
	label string
	b     []byte
}

var captured = &sink{}

func (s *sink) add(label string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts = append(s.parts, part{label, bytes.Clone(b)})
}

// writer returns an io.Writer appending to the sink under label.
func (s *sink) writer(label string) *sinkWriter { return &sinkWriter{s: s, label: label} }

type sinkWriter struct {
	s     *sink
	label string
}

func (w *sinkWriter) Write(p []byte) (int, error) {
	w.s.add(w.label, p)
	return len(p), nil
}

// find returns a description of every captured part containing one of
// needles, with some context.
func (s *sink) find(needles ...string) []string { return s.findIn("", needles...) }

// findIn is find over the parts whose label starts with prefix.
func (s *sink) findIn(prefix string, needles ...string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hits []string
	for _, p := range s.parts {
		if !strings.HasPrefix(p.label, prefix) {
			continue
		}
		for _, n := range needles {
			if i := bytes.Index(p.b, []byte(n)); i >= 0 {
				lo, hi := max(0, i-120), min(len(p.b), i+len(n)+60)
				hits = append(hits, fmt.Sprintf("%s: %q in …%s…", p.label, n, p.b[lo:hi]))
			}
		}
	}
	return hits
}

func (s *sink) size() (parts, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.parts {
		n += len(p.b)
	}
	return len(s.parts), n
}

func TestMain(m *testing.M) {
	code := m.Run()
	removeBinary()
	if code == 0 && !testing.Short() {
		if hits := captured.find(canaries...); len(hits) > 0 {
			fmt.Fprintf(os.Stderr, "a key leaked into captured output:\n  %s\n", strings.Join(hits, "\n  "))
			code = 1
		}
		// net/http logs a recovered panic as "http: panic serving ...";
		// http.ErrAbortHandler, used on purpose to cut a broken stream, is
		// not logged.
		// A crash prints "panic: "; the SIGQUIT dump TestBinaryNeverShowsKeys
		// asks for is the one goroutine dump expected.
		if hits := captured.findIn("", "panic serving", "panic: ", "fatal error: "); len(hits) > 0 {
			fmt.Fprintf(os.Stderr, "a handler panicked:\n  %s\n", strings.Join(hits, "\n  "))
			code = 1
		}
		// Prompts and replies never reach a log line.
		if hits := captured.findIn("log", promptMarker, replyMarker); len(hits) > 0 {
			fmt.Fprintf(os.Stderr, "a request or response body was logged:\n  %s\n", strings.Join(hits, "\n  "))
			code = 1
		}
		parts, n := captured.size()
		fmt.Fprintf(os.Stderr, "chaos: grepped %d captured parts (%d bytes) for the keys and for panics\n", parts, n)
	}
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func leakOptions() []goleak.Option {
	// No ignores: every proxy, upstream and client of the suite is closed by
	// its test, and goleak retries while closed connections wind down.
	return nil
}
