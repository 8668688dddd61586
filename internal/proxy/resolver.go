package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// PublicDNS is the DNS server asked when the system names none and
// Termux's resolv.conf names none either. It is the first server of the
// resolv.conf that Termux ships.
const PublicDNS = "8.8.8.8:53"

// DNS is the DNS server the upstream transport asks.
type DNS struct {
	// Server is host:port; "" means the system's resolver.
	Server string
	// Fallback says why Server stands in for the system's resolver, e.g.
	// "no nameserver in /etc/resolv.conf; from /data/data/com.termux/files/usr/etc/resolv.conf";
	// "" when it does not (the system's, or [upstream] resolver).
	Fallback string
}

// UpstreamDNS returns the DNS server for u's dials: [upstream] resolver
// when set, else the system's, except where the system's cannot work.
//
// That is Android (Termux) and Linux without a usable /etc/resolv.conf:
// Go's own resolver, which a binary built without cgo uses, then asks
// localhost:53, where nothing answers, and every upstream fails with
// "connection refused" on a phone whose browser works fine. Android keeps
// its DNS servers in system properties that a process without root cannot
// read, so the nameservers of Termux's $PREFIX/etc/resolv.conf are used
// instead, else PublicDNS. macOS and Windows ask the OS, never a file.
func UpstreamDNS(u config.Upstream) DNS {
	if u.Resolver != "" {
		return DNS{Server: u.Resolver}
	}
	return systemDNS{goos: runtime.GOOS, getenv: os.Getenv, readFile: os.ReadFile}.pick()
}

// Resolver asks d.Server with Go's own resolver, each query's connection
// bounded by timeout; nil (the system's) when d names no server.
func (d DNS) Resolver(timeout time.Duration) *net.Resolver {
	if d.Server == "" {
		return nil
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			dialer := net.Dialer{Timeout: timeout}
			return dialer.DialContext(ctx, network, d.Server)
		},
	}
}

// systemDNS is where UpstreamDNS looks, so that tests can fake the files. Its paths
// are Linux paths, whatever the OS the tests run on.
type systemDNS struct {
	goos     string
	getenv   func(string) string
	readFile func(string) ([]byte, error)
}

// etcResolvConf is the file Go's resolver reads; termuxPrefix is Termux's
// $PREFIX when the environment lacks it (a service started by Termux:Boot
// may).
const (
	etcResolvConf = "/etc/resolv.conf"
	termuxPrefix  = "/data/data/com.termux/files/usr"
)

func (s systemDNS) pick() DNS {
	if s.goos != "linux" && s.goos != "android" {
		return DNS{}
	}
	why := "no nameserver in " + etcResolvConf
	b, err := s.readFile(etcResolvConf)
	switch {
	case err == nil && nameserver(b) != "":
		return DNS{}
	case err != nil:
		why = "cannot read " + etcResolvConf + " (" + errText(err) + ")"
	}
	var tried []string
	for _, prefix := range []string{s.getenv("PREFIX"), termuxPrefix} {
		f := path.Join(prefix, "etc", "resolv.conf")
		if !path.IsAbs(prefix) || slices.Contains(tried, f) {
			continue
		}
		if b, err := s.readFile(f); err == nil {
			if ns := nameserver(b); ns != "" {
				return DNS{Server: ns, Fallback: why + "; from " + f}
			}
		}
		tried = append(tried, f)
	}
	if len(tried) > 0 {
		why += "; none in " + strings.Join(tried, " nor ")
	}
	return DNS{Server: PublicDNS, Fallback: why + "; a public resolver"}
}

// nameserver returns the first usable "nameserver IP" of a resolv.conf as
// host:53, as Go's resolver would read it; "" when there is none.
func nameserver(resolvConf []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(resolvConf))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		if _, err := netip.ParseAddr(f[1]); err == nil {
			return net.JoinHostPort(f[1], "53")
		}
	}
	return ""
}

// errText is err without the path, which the caller already names.
func errText(err error) string {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
