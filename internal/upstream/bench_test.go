package upstream_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chutes-proxy/chutes-proxy/internal/upstream"
)

// BenchmarkRoundTrip compares this Transport with net/http's, tuned as the
// proxy tunes it, on the proxy's hot path: a 1 KB POST and a 450-byte
// answer over a kept-alive loopback connection. The server is the same
// in-process net/http server for both, so the difference is the client's.
func BenchmarkRoundTrip(b *testing.B) {
	answer := bytes.Repeat([]byte("a"), 450)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	body := bytes.Repeat([]byte("x"), 1024)
	nethttp := http.DefaultTransport.(*http.Transport).Clone()
	nethttp.MaxIdleConnsPerHost = 256
	defer nethttp.CloseIdleConnections()
	ours := &upstream.Transport{}
	defer ours.CloseIdleConnections()
	for _, tt := range []struct {
		name string
		rt   http.RoundTripper
	}{{"upstream", ours}, {"net-http", nethttp}} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat/completions", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				resp, err := tt.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != int64(len(answer)) {
					b.Fatalf("read %d bytes: %v", n, err)
				}
			}
		})
	}
}
