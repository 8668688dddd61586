package proxy

import (
	"context"
	"encoding/binary"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

func TestSystemDNS(t *testing.T) {
	const termuxConf = termuxPrefix + "/etc/resolv.conf"
	tests := []struct {
		name     string
		goos     string
		prefix   string            // $PREFIX
		files    map[string]string // path → content; others do not exist
		want     string
		wantWhy  []string // facts the Fallback must contain
		noReason bool     // Fallback must be empty
	}{
		{name: "linux with resolv.conf: the system's", goos: "linux",
			files: map[string]string{etcResolvConf: "search lan\nnameserver 192.168.1.1\n"}, noReason: true},
		{name: "android with resolv.conf: the system's", goos: "android",
			files: map[string]string{etcResolvConf: "nameserver 10.0.0.1"}, noReason: true},
		{name: "windows never reads a file", goos: "windows", noReason: true},
		{name: "darwin never reads a file", goos: "darwin", noReason: true},
		{name: "termux: no /etc/resolv.conf, $PREFIX's", goos: "android", prefix: "/p",
			files: map[string]string{"/p/etc/resolv.conf": "# Termux\nnameserver 1.0.0.1\nnameserver 8.8.8.8\n"},
			want:  "1.0.0.1:53", wantWhy: []string{"cannot read /etc/resolv.conf", "file does not exist", "from /p/etc/resolv.conf"}},
		{name: "termux without $PREFIX: the default prefix", goos: "android",
			files: map[string]string{termuxConf: "nameserver 2001:4860:4860::8888"},
			want:  "[2001:4860:4860::8888]:53", wantWhy: []string{"from " + termuxConf}},
		{name: "a linux binary in termux too", goos: "linux", prefix: "/p",
			files: map[string]string{"/p/etc/resolv.conf": "nameserver 9.9.9.9"},
			want:  "9.9.9.9:53", wantWhy: []string{"from /p/etc/resolv.conf"}},
		{name: "resolv.conf without nameservers, as Go reads it, is localhost", goos: "linux",
			files: map[string]string{etcResolvConf: "# nameserver 1.1.1.1\nnameserver dns.example\noptions ndots:1\n",
				termuxConf: "nameserver 8.8.4.4"},
			want: "8.8.4.4:53", wantWhy: []string{"no nameserver in /etc/resolv.conf"}},
		{name: "nothing anywhere: public", goos: "android", prefix: "/p",
			files: map[string]string{"/p/etc/resolv.conf": ""},
			want:  PublicDNS, wantWhy: []string{"cannot read /etc/resolv.conf", "/p/etc/resolv.conf nor " + termuxConf, "public"}},
		{name: "relative $PREFIX is ignored", goos: "android", prefix: "usr",
			files: map[string]string{"usr/etc/resolv.conf": "nameserver 1.2.3.4"},
			want:  PublicDNS, wantWhy: []string{"none in " + termuxConf + "; a public"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := systemDNS{
				goos:   tt.goos,
				getenv: func(k string) string { return map[string]string{"PREFIX": tt.prefix}[k] },
				readFile: func(name string) ([]byte, error) {
					if tt.goos == "windows" || tt.goos == "darwin" {
						t.Errorf("read %s on %s", name, tt.goos)
					}
					b, ok := tt.files[name]
					if !ok {
						return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
					}
					return []byte(b), nil
				},
			}
			got := s.pick()
			if got.Server != tt.want {
				t.Errorf("Server = %q, want %q (why %q)", got.Server, tt.want, got.Fallback)
			}
			if tt.noReason != (got.Fallback == "") {
				t.Errorf("Fallback = %q", got.Fallback)
			}
			for _, w := range tt.wantWhy {
				if !strings.Contains(got.Fallback, w) {
					t.Errorf("Fallback %q does not say %q", got.Fallback, w)
				}
			}
		})
	}
}

func TestUpstreamDNSConfiguredWins(t *testing.T) {
	if got := UpstreamDNS(config.Upstream{Resolver: "1.1.1.1:53"}); got != (DNS{Server: "1.1.1.1:53"}) {
		t.Fatalf("UpstreamDNS = %+v", got)
	}
	if r := (DNS{}).Resolver(time.Second); r != nil {
		t.Fatalf("the system's DNS has a Resolver %+v, want nil (net.DefaultResolver)", r)
	}
}

// TestDialerAsksTheResolver resolves a name that exists nowhere but in a
// fake DNS server on loopback, and reaches the HTTP server behind it.
func TestDialerAsksTheResolver(t *testing.T) {
	dns := fakeDNS(t, "chutes.test.", net.IPv4(127, 0, 0, 1))
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("reached"))
	}))
	defer upstream.Close()
	_, port, _ := net.SplitHostPort(upstream.Listener.Addr().String())

	tr := NewTransport(config.Upstream{Resolver: dns})
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://chutes.test:"+port+"/", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET through the resolver: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// fakeDNS answers A queries for name with ip over UDP on loopback (every
// other query gets an empty answer) until the test ends, and returns its
// address.
func fakeDNS(t *testing.T, name string, ip net.IP) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil && runtime.GOOS == "windows" && strings.Contains(err.Error(), "wsaioctl") {
		// Wine (CI runs the Windows tests under it) lacks the
		// SIO_UDP_CONNRESET that Go sets on every UDP socket; Windows has it.
		t.Skip("no UDP sockets here:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			if reply := dnsReply(buf[:n], name, ip); reply != nil {
				pc.WriteTo(reply, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// dnsReply answers one query (RFC 1035 §4.1): the header with QR and RA
// set, the question as asked, and one A record when it asks for name's.
func dnsReply(q []byte, name string, ip net.IP) []byte {
	if len(q) < 12 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	end := i + 5
	match := strings.EqualFold(strings.Join(labels, ".")+".", name) && qtype == 1 // A
	r := append([]byte(nil), q[:end]...)
	r[2], r[3] = 0x81, 0x80               // response, recursion desired and available
	binary.BigEndian.PutUint16(r[6:], 0)  // answers
	binary.BigEndian.PutUint16(r[8:], 0)  // authority
	binary.BigEndian.PutUint16(r[10:], 0) // additional
	if match {
		binary.BigEndian.PutUint16(r[6:], 1)
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4) // name at 12, A, IN, TTL 60, 4 bytes
		r = append(r, ip.To4()...)
	}
	return r
}
