package doctor

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/human"
)

// The path to the upstream: DNS, TCP, TLS, one check each, so that the
// line that fails names the layer to fix.

// target is base_url taken apart.
type target struct {
	base   string // base_url as configured
	scheme string
	host   string // without brackets
	port   string // explicit, or the scheme's default
}

func newTarget(u *url.URL) target {
	port := "443"
	if u.Scheme == "http" {
		port = "80"
	}
	return target{base: strings.TrimRight(u.String(), "/"), scheme: u.Scheme, host: u.Hostname(), port: cmp.Or(u.Port(), port)}
}

// checkDNS resolves the upstream host through the resolver the proxy would
// use and, for comparison, through public ones, so that a failing line can
// tell a broken local resolver from no network at all. It sets r.resolver
// and r.addrs for the checks after it.
func (r *runner) checkDNS(ctx context.Context) Result {
	host := r.target.host
	r.resolver = r.o.System
	if host == "" {
		return warn(CheckDNS, "not checked: base_url has no host")
	}
	if net.ParseIP(host) != nil {
		r.addrs = []string{host}
		return ok(CheckDNS, "not needed: %s is an IP address", host)
	}

	type cand struct {
		name string
		res  Resolver
		addr string // the [upstream] resolver value that selects it
	}
	cands := []cand{{"the system resolver", r.o.System, ""}}
	if s := r.cfg.Upstream.Resolver; s != "" {
		// The proxy asks this one; the system's is then a comparison.
		cands = append([]cand{{"upstream.resolver " + s, r.o.NewResolver(s), s}}, cands...)
	}
	for _, s := range r.o.PublicDNS {
		if s != r.cfg.Upstream.Resolver {
			cands = append(cands, cand{s, r.o.NewResolver(s), s})
		}
	}
	primary := cands[0]
	r.resolver = primary.res

	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	type answer struct {
		addrs []string
		err   error
	}
	got := make([]answer, len(cands))
	var wg sync.WaitGroup
	for i, c := range cands {
		wg.Go(func() {
			addrs, err := c.res.LookupHost(ctx, host)
			if err == nil && len(addrs) == 0 {
				err = errors.New("no addresses")
			}
			got[i] = answer{addrs, err}
			if i == 0 && err == nil {
				cancel() // the proxy's resolver answered: no comparison needed
			}
		})
	}
	wg.Wait()
	if a := got[0]; a.err == nil {
		r.addrs = a.addrs
		return ok(CheckDNS, "%s → %s (%s)", host, shortList(a.addrs), primary.name)
	}

	var errs []string
	allNotFound := true
	for i, c := range cands {
		a := got[i]
		if a.err != nil {
			var de *net.DNSError
			allNotFound = allNotFound && errors.As(a.err, &de) && de.IsNotFound
			errs = append(errs, c.name+": "+dnsReason(a.err))
			continue
		}
		// Another resolver can: the proxy's is the problem. The checks
		// after this one resolve through the one that works.
		r.resolver, r.addrs = c.res, a.addrs
		what := fmt.Sprintf("%s cannot resolve %s (%s), but %s can (→ %s)", primary.name, host, dnsReason(got[0].err), c.name, shortList(a.addrs))
		if primary.addr == "" {
			return fail(CheckDNS, "only the system resolver fails: %s. Your router's or ISP's DNS, a VPN or an ad blocker is failing for this name; "+
				"set [upstream] resolver = %q in proxy.toml so that chutes-proxy asks that server instead (the checks below use it)", what, c.addr)
		}
		return fail(CheckDNS, "%s: set [upstream] resolver = %q in proxy.toml (\"\" is the system's resolver; the checks below use it)", what, c.addr)
	}
	// Every resolver saying "no such host" for Chutes' own name means the
	// network answers DNS in their place (a captive portal, a VPN, a
	// filtering firewall); for any other name, the name is wrong.
	if allNotFound && !isChutesHost(host) {
		return fail(CheckDNS, "%s does not exist: every resolver says so (%s); check the host in base_url", host, strings.Join(errs, "; "))
	}
	return fail(CheckDNS, "no resolver could resolve %s (%s): this machine seems to have no working network; "+
		"check the connection (Wi-Fi, cable), or turn off a VPN or firewall that blocks DNS, then run chutes-proxy doctor again", host, strings.Join(errs, "; "))
}

func isChutesHost(host string) bool {
	h := strings.ToLower(host)
	return h == "chutes.ai" || strings.HasSuffix(h, ".chutes.ai")
}

// shortList shows up to three addresses.
func shortList(addrs []string) string {
	if len(addrs) > 3 {
		return strings.Join(addrs[:3], ", ") + fmt.Sprintf(" and %d more", len(addrs)-3)
	}
	return strings.Join(addrs, ", ")
}

func dnsReason(err error) string {
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return "no such host"
	case errors.As(err, &de) && de.IsTimeout, errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case errors.As(err, &de):
		return de.Err
	}
	return err.Error()
}

// probe fetches the upstream's /models once through r.client, without a
// key (Chutes serves it to anyone), as the proxy's health probe does. Its
// trace answers the tcp, tls and models checks, each on its own line; on
// success r.known is set. Nothing is sent when DNS found no address.
func (r *runner) probe(ctx context.Context) {
	if r.addrs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, tcpTimeout+tlsTimeout+modelsTimeout)
	defer cancel()
	var entries []catalog.Entry
	r.path, entries = chutes.Probe(ctx, r.client, config.Target{BaseURL: r.target.base})
	if r.path.OK() {
		r.known = make([]string, len(entries))
		for i, e := range entries {
			r.known[i] = e.ID
		}
	}
}

// connected reports whether the probe's TCP connection succeeded.
func (r *runner) connected() bool { return r.path.ConnectMS != nil }

// checkTCP says whether the probe connected to the upstream host's port.
func (r *runner) checkTCP() Result {
	hp := net.JoinHostPort(r.target.host, r.target.port)
	switch note := r.proxyNote(); {
	case r.addrs == nil:
		return warn(CheckTCP, "not tried: there is no address for %s (see %s above)", r.target.host, CheckDNS)
	case r.connected():
		return ok(CheckTCP, "connected to %s in %s%s", hp, millis(*r.path.ConnectMS), note)
	case note != "":
		// The proxy goes through that server; a direct connection
		// failing may be how this network is meant to work.
		return warn(CheckTCP, "cannot connect to %s directly (%v)%s", hp, unwrapOp(r.path.Err), note)
	}
	switch err := r.path.Err; {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fail(CheckTCP, "%s refused the connection: nothing accepts connections on port %s there; check base_url's port, or a firewall that rejects it", hp, r.target.port)
	case failover.IsTimeout(err):
		return fail(CheckTCP, "no answer from %s within %s: a firewall, proxy or VPN blocks the connection, or the network is down (upstream.connect_timeout is %s)",
			hp, r.connectTimeout(), r.cfg.Upstream.ConnectTimeout.D())
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return fail(CheckTCP, "no route to %s: check the network connection or VPN", hp)
	}
	return fail(CheckTCP, "cannot connect to %s: %v; check the network connection, firewall or VPN", hp, unwrapOp(r.path.Err))
}

// checkTLS says how the probe's handshake went, the certificate verified
// with the configured roots and clock, and explains a failure: clock skew,
// a TLS interceptor, or the wrong server.
func (r *runner) checkTLS() Result {
	switch {
	case r.target.scheme != "https":
		r.secured = r.connected()
		return ok(CheckTLS, "not used: base_url is plain http")
	case !r.connected():
		return warn(CheckTLS, "not tried: no TCP connection (see %s above)", CheckTCP)
	case r.path.TLS == nil:
		return fail(CheckTLS, "%s", r.tlsProblem(r.target.host, r.path.Err))
	}
	r.secured = true
	st := r.path.TLS
	leaf := st.PeerCertificates[0]
	return ok(CheckTLS, "%s with %s, certificate valid until %s (issued by %s)",
		tls.VersionName(st.Version), r.target.host, leaf.NotAfter.UTC().Format("2006-01-02"), issuer(leaf))
}

// millis renders a step's time as chutes.Reachability keeps it.
func millis(n int64) string { return human.Duration(time.Duration(n) * time.Millisecond) }

// connectTimeout bounds each connection the doctor opens: tcpTimeout, or
// upstream.connect_timeout when shorter.
func (r *runner) connectTimeout() time.Duration {
	if ct := r.cfg.Upstream.ConnectTimeout.D(); ct > 0 && ct < tcpTimeout {
		return ct
	}
	return tcpTimeout
}

// tlsProblem explains a failed handshake with host.
func (r *runner) tlsProblem(host string, err error) string {
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) || len(ve.UnverifiedCertificates) == 0 {
		if failover.IsTimeout(err) {
			return fmt.Sprintf("no TLS answer from %s within %s: a firewall or proxy may be holding HTTPS connections", host, tlsTimeout)
		}
		return fmt.Sprintf("TLS handshake with %s failed: %v; a firewall, proxy or captive portal (hotel, airport Wi-Fi) may be interfering", host, err)
	}
	leaf := ve.UnverifiedCertificates[0]
	now := r.o.Now().UTC()
	const day = "2006-01-02 15:04 UTC"
	var inv x509.CertificateInvalidError
	expired := errors.As(err, &inv) && inv.Reason == x509.Expired
	switch {
	case expired && now.Before(leaf.NotBefore):
		return fmt.Sprintf("the certificate of %s is not yet valid: it is valid from %s to %s, but this machine's clock says %s. "+
			"The system clock is wrong: set it right (turn on automatic date and time), then run chutes-proxy doctor again",
			host, leaf.NotBefore.UTC().Format(day), leaf.NotAfter.UTC().Format(day), now.Format(day))
	case expired:
		return fmt.Sprintf("the certificate of %s has expired: it was valid until %s, and this machine's clock says %s. "+
			"If the system clock is wrong, set it right (automatic date and time); if it is right, the server's certificate really expired: something intercepts HTTPS, or Chutes must renew it",
			host, leaf.NotAfter.UTC().Format(day), now.Format(day))
	case errors.As(err, new(x509.UnknownAuthorityError)):
		return fmt.Sprintf("the certificate of %s is signed by an unknown authority (issued by %s): something intercepts HTTPS (antivirus web scanning, a company proxy, a captive portal) "+
			"or base_url points at the wrong server; turn the interception off, or add its root certificate to the system's certificate store", host, issuer(leaf))
	case errors.As(err, new(x509.HostnameError)):
		names := leaf.DNSNames
		if len(names) == 0 {
			names = []string{leaf.Subject.CommonName}
		}
		return fmt.Sprintf("the certificate presented is for %s, not %s: base_url points at the wrong server, or something intercepts HTTPS", shortList(names), host)
	}
	return fmt.Sprintf("the certificate of %s is not valid: %v", host, ve.Err)
}

func issuer(c *x509.Certificate) string {
	if n := c.Issuer.CommonName; n != "" {
		return n
	}
	if len(c.Issuer.Organization) > 0 {
		return c.Issuer.Organization[0]
	}
	return "an unnamed issuer"
}

// dial connects to addr within connectTimeout, resolving its host the way
// checkDNS found works.
func (r *runner) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return r.dialVia(ctx, r.resolver, r.connectTimeout(), network, addr)
}

// dialVia connects to addr within timeout, resolving its host with res
// and trying each address in turn.
func (r *runner) dialVia(ctx context.Context, res Resolver, timeout time.Duration, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs := []string{host}
	if net.ParseIP(host) == nil {
		if addrs, err = res.LookupHost(ctx, host); err != nil {
			return nil, err
		}
	}
	err = fmt.Errorf("no addresses for %s", host)
	for i, a := range addrs {
		c, derr := r.o.Dial(ctx, network, net.JoinHostPort(a, port))
		if derr == nil {
			return c, nil
		}
		if i == 0 {
			err = derr
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// proxyNote mentions an HTTP proxy from the environment (HTTPS_PROXY and
// the like), which chutes-proxy's own requests go through while the
// doctor's checks go direct; "" when none applies.
func (r *runner) proxyNote() string {
	req, err := http.NewRequest(http.MethodGet, r.target.base, nil)
	if err != nil {
		return ""
	}
	p, err := http.ProxyFromEnvironment(req)
	if err != nil || p == nil {
		return ""
	}
	return fmt.Sprintf("; note: chutes-proxy sends its requests through the HTTP proxy %s (from the environment), which these checks do not use", p.Redacted())
}
