package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/doctor"
)

// fakeChutes is Chutes on loopback: the inference API under /v1 and the
// account API at the root, one server for both host names.
type fakeChutes struct {
	mu           sync.Mutex
	models       []string
	modelsStatus int    // 0 = 200
	quota        string // body of /users/me/quota_usage/me
	me           string // body of /users/me
	accountCode  int    // 0 = 200
	chatStatus   int    // 0 = 200
	chatBody     string // "" = a one-choice completion
	chats        []map[string]any
	auths        []string // Authorization headers seen on the account API
	allAuths     []string // Authorization headers of every request
}

func newFakeChutes() *fakeChutes {
	return &fakeChutes{
		models: []string{"deepseek-ai/DeepSeek-R1", "Qwen/Qwen2.5-72B-Instruct", "chutesai/Mistral-Small-3.1-24B-Instruct-2503"},
		quota:  `{"quota":300,"used":212,"chute_id":"*"}`,
		me:     `{"username":"someone","user_id":"u1","balance":10.5}`,
	}
}

func (f *fakeChutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allAuths = append(f.allAuths, r.Header.Get("Authorization"))
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/v1/models":
		if f.modelsStatus != 0 {
			w.WriteHeader(f.modelsStatus)
			_, _ = io.WriteString(w, `{"detail":"no"}`)
			return
		}
		var data []map[string]any
		for _, m := range f.models {
			data = append(data, map[string]any{"id": m, "object": "model", "context_length": 65536})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": data})
	case "/v1/chat/completions":
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		body["authorization"] = r.Header.Get("Authorization")
		f.chats = append(f.chats, body)
		if f.chatStatus != 0 {
			w.WriteHeader(f.chatStatus)
		}
		if f.chatBody != "" {
			_, _ = io.WriteString(w, f.chatBody)
			return
		}
		_, _ = fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"length"}]}`, body["model"])
	case "/users/me/quota_usage/me", "/users/me":
		f.auths = append(f.auths, r.Header.Get("Authorization"))
		if f.accountCode != 0 {
			w.WriteHeader(f.accountCode)
			_, _ = io.WriteString(w, `{"detail":"Invalid token."}`)
			return
		}
		if r.URL.Path == "/users/me" {
			_, _ = io.WriteString(w, f.me)
			return
		}
		_, _ = io.WriteString(w, f.quota)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeChutes) set(fn func(*fakeChutes)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// testCert is a self-signed certificate for Chutes' two host names and
// 127.0.0.1, valid from an hour ago for a day.
type testCert struct {
	cert tls.Certificate
	leaf *x509.Certificate
	pool *x509.CertPool
}

var (
	certOnce sync.Once
	certVal  testCert
)

func chutesCert(t testing.TB) testCert {
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "fake Chutes", Organization: []string{"doctor tests"}},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			DNSNames:              []string{"llm.chutes.ai", "api.chutes.ai"},
			IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		pool := x509.NewCertPool()
		pool.AddCert(leaf)
		certVal = testCert{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf: leaf, pool: pool}
	})
	return certVal
}

// startChutes serves f over TLS on loopback with chutesCert.
func startChutes(t testing.TB, f *fakeChutes) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{chutesCert(t).cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are what some tests want
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// loopbackDial sends every connection to port 443 (Chutes' two hosts) to
// srv and any other to the loopback address asked for (the other
// providers' servers), and refuses anything that is not a loopback
// address: no test sends traffic off this machine.
func loopbackDial(t testing.TB, srv *httptest.Server) func(ctx context.Context, network, addr string) (net.Conn, error) {
	to := srv.Listener.Addr().String()
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			t.Errorf("the doctor dialled %s, which is not loopback", addr)
			return nil, fmt.Errorf("test: refusing to dial %s", addr)
		}
		dest := to
		if port != "443" {
			dest = addr
		}
		var d net.Dialer
		return d.DialContext(ctx, network, dest)
	}
}

// resolverFunc is a fake resolver.
type resolverFunc func(ctx context.Context, host string) ([]string, error)

func (f resolverFunc) LookupHost(ctx context.Context, host string) ([]string, error) {
	return f(ctx, host)
}

// goodDNS resolves every name to 127.0.0.1.
func goodDNS() doctor.Resolver {
	return resolverFunc(func(ctx context.Context, host string) ([]string, error) {
		return []string{"127.0.0.1"}, nil
	})
}

// brokenDNS fails like a resolver whose server misbehaves.
func brokenDNS(server string) doctor.Resolver {
	return resolverFunc(func(ctx context.Context, host string) ([]string, error) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: host, Server: server, IsTemporary: true}
	})
}

// hangingDNS answers only when the context ends.
func hangingDNS() doctor.Resolver {
	return resolverFunc(func(ctx context.Context, host string) ([]string, error) {
		<-ctx.Done()
		return nil, &net.DNSError{Err: "i/o timeout", Name: host, IsTimeout: true}
	})
}

// freePort returns a loopback address nothing listens on.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// setup is one doctor run's world; tests change what they need.
type setup struct {
	toml   string // proxy.toml; {LISTEN} is replaced
	listen string
	env    map[string]string
	fake   *fakeChutes
	system doctor.Resolver
	public map[string]doctor.Resolver // by "1.1.1.1:53"; missing = broken
	roots  *x509.CertPool
	now    func() time.Time
	live   bool
	budget time.Duration
}

const goodTOML = `listen = "{LISTEN}"

[upstream]
base_url = "https://llm.chutes.ai/v1"
api_key = "cpk_0123456789abcdef.0123456789abcdef"
account_url = "https://api.chutes.ai"

[[models]]
id = "deepseek-ai/DeepSeek-R1"
aliases = ["r1"]
fallbacks = ["Qwen/Qwen2.5-72B-Instruct"]
`

func newSetup(t *testing.T) *setup {
	return &setup{
		toml:   goodTOML,
		listen: freePort(t),
		env:    map[string]string{},
		fake:   newFakeChutes(),
		system: goodDNS(),
		public: map[string]doctor.Resolver{"1.1.1.1:53": goodDNS(), "8.8.8.8:53": goodDNS()},
		roots:  chutesCert(t).pool,
	}
}

// run runs the doctor in s's world and returns its report and output.
func (s *setup) run(t *testing.T) (*doctor.Report, string) {
	t.Helper()
	srv := startChutes(t, s.fake)
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(s.toml, "{LISTEN}", s.listen)), 0o600); err != nil {
		t.Fatal(err)
	}
	env := s.env
	opts := doctor.Options{
		Load:   config.Options{File: path, Getenv: func(k string) string { return env[k] }},
		Live:   s.live,
		System: s.system,
		NewResolver: func(addr string) doctor.Resolver {
			if r, ok := s.public[addr]; ok {
				return r
			}
			return brokenDNS(addr)
		},
		Dial:    loopbackDial(t, srv),
		RootCAs: s.roots,
		Now:     s.now,
		Budget:  s.budget,
	}
	var out strings.Builder
	rep := doctor.Run(context.Background(), opts, &out)
	t.Logf("doctor output:\n%s", out.String())
	return rep, out.String()
}
