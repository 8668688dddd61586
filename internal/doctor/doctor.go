// Package doctor answers "is it Chutes, or is it me?" before a chat fails.
// It checks, in order, the config, the key, base_url, DNS, TCP, TLS, the
// upstream's /models, the key against Chutes' account API, that every
// configured model is listed, each other provider (reachable, its own key
// not refused, its configured models listed), the listen port and, when
// asked, one real completion; each check prints one line, ok / warn / FAIL
// with the fix.
//
// Everything that touches the network can be injected (resolvers, the
// dialer, root certificates, the clock), so the checks are tested against
// fakes on loopback.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/chutes"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

// Level is a check's outcome.
type Level int

// The levels, in order of severity. Only Fail counts as a problem on the
// user's side; Warn is worth reading but does not fail the run.
const (
	OK Level = iota
	Warn
	Fail
)

// String is the word printed at the start of a check's line.
func (l Level) String() string { return [...]string{"ok", "warn", "FAIL"}[l] }

// Check names, printed after the level.
const (
	CheckConfig   = "config"
	CheckKey      = "key"
	CheckBaseURL  = "base_url"
	CheckDNS      = "dns"
	CheckTCP      = "tcp"
	CheckTLS      = "tls"
	CheckModels   = "models"
	CheckAccount  = "account"
	CheckModelIDs = "model ids"
	// CheckProvider is one line per [[providers]] table, its name first.
	CheckProvider = "provider"
	CheckListen   = "listen"
	CheckLive     = "live"
)

// Result is one check's line. Detail lines are printed indented below it
// (the config's problems, one per line).
type Result struct {
	Check  string
	Level  Level
	Msg    string
	Detail []string
}

// Report is every result of a run, in the order printed.
type Report struct {
	Results []Result
}

// Failures counts the FAIL lines.
func (r *Report) Failures() int {
	n := 0
	for _, res := range r.Results {
		if res.Level == Fail {
			n++
		}
	}
	return n
}

// Resolver looks up a host's addresses. *net.Resolver is one.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Options configure a run. The zero value checks the real thing: the config
// found as chutes-proxy serve would find it, the system resolver, real
// sockets and the system's root certificates.
type Options struct {
	// Load says where the config is; see config.Load.
	Load config.Options
	// Live also sends one minimal chat completion (max_tokens 1), which
	// counts against the daily quota.
	Live bool

	// System is the system resolver; nil means net.DefaultResolver.
	System Resolver
	// NewResolver returns a resolver that asks the DNS server at addr
	// ("1.1.1.1:53"), as [upstream] resolver makes the proxy do; nil means a
	// pure-Go net.Resolver dialling addr.
	NewResolver func(addr string) Resolver
	// PublicDNS are the servers asked for comparison when the system
	// resolver fails; nil means 1.1.1.1:53 and 8.8.8.8:53.
	PublicDNS []string
	// Dial opens TCP connections to resolved addresses; nil means a
	// net.Dialer. Tests map every address to a loopback server.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// RootCAs verify the upstream's certificate; nil means the system's.
	RootCAs *x509.CertPool
	// Now is the clock; nil means time.Now. The certificate check and the
	// quota's reset time read it.
	Now func() time.Time
	// Budget bounds the whole run; 0 means 14s, so that a run ends within
	// 15 s even when every check times out.
	Budget time.Duration
}

// Time-outs of the checks. Their sum along the longest path (DNS, TCP, TLS,
// /models, one after the other; the account and listen checks run
// alongside) stays under the budget.
const (
	defaultBudget  = 14 * time.Second
	dnsTimeout     = 3 * time.Second
	tcpTimeout     = 3 * time.Second // or connect_timeout when shorter
	tlsTimeout     = 3 * time.Second
	modelsTimeout  = 4 * time.Second
	accountTimeout = 4 * time.Second
	listenTimeout  = 1500 * time.Millisecond
	liveTimeout    = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.Load.Getenv == nil {
		o.Load.Getenv = os.Getenv
	}
	if o.System == nil {
		o.System = net.DefaultResolver
	}
	if o.NewResolver == nil {
		o.NewResolver = goResolver
	}
	if o.PublicDNS == nil {
		o.PublicDNS = []string{"1.1.1.1:53", "8.8.8.8:53"}
	}
	if o.Dial == nil {
		o.Dial = (&net.Dialer{}).DialContext
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Budget <= 0 {
		o.Budget = defaultBudget
	}
	return o
}

// goResolver asks the DNS server at addr directly, bypassing the system's
// resolver configuration: the same as [upstream] resolver in the proxy.
func goResolver(addr string) Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
}

// Run runs every check, printing each line to w as soon as it is known and
// the verdict at the end, and returns the report. The run is done when Run
// returns: nothing it started is left running.
func Run(ctx context.Context, opts Options, w io.Writer) *Report {
	o := opts.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Budget)
	defer cancel()
	r := &runner{o: o, w: w, rep: &Report{}}
	fmt.Fprintln(w, "chutes-proxy doctor: is it Chutes, or is it me?")
	r.run(ctx)
	r.verdict()
	return r.rep
}

// runner holds one run's state. Fields set by a check are read only by
// later checks; the checks that run alongside others only read.
type runner struct {
	o   Options
	w   io.Writer
	rep *Report

	cfg    *config.Config
	target target
	// resolver is the one the next checks resolve through: the proxy's own
	// (system, or upstream.resolver), or a public one that worked when the
	// proxy's did not, so that the later checks still say something.
	resolver Resolver
	// addrs are the upstream host's addresses, nil if unknown.
	addrs []string
	// path is the probe of the upstream's /models that the tcp, tls and
	// models lines report; zero when DNS found no address.
	path chutes.Reachability
	// secured is true when the probe's TLS handshake succeeded (or
	// base_url is plain http and it connected): the HTTP checks can then
	// say something new.
	secured bool
	// known is the upstream's model list, nil if it could not be fetched.
	known []string
	// account summarises the account for the live check's diagnosis.
	account string
	client  *http.Client
}

func (r *runner) run(ctx context.Context) {
	if !r.add(r.checkConfig()) {
		fmt.Fprintln(r.w, "      (the other checks need a valid config)")
		return
	}
	r.add(r.checkKey())
	r.add(r.checkBaseURL())

	r.add(r.checkDNS(ctx))
	// Every request the doctor makes to the upstream and the account API
	// goes straight there (no proxy from the environment), resolving
	// through r.resolver, verifying with the configured roots and clock.
	tr := &http.Transport{
		DialContext:         r.dial,
		TLSClientConfig:     &tls.Config{RootCAs: r.o.RootCAs, Time: r.o.Now},
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: tlsTimeout,
	}
	r.client = &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()

	// The account API and the listen port do not depend on the upstream's
	// checks: ask them now, print them in their place. Each channel has
	// room for its result, so a goroutine never blocks on sending it.
	account, listen := make(chan Result, 1), make(chan Result, 1)
	go func() { account <- r.checkAccount(ctx) }()
	go func() { listen <- r.checkListen(ctx) }()
	providers := r.checkProviders(ctx)

	r.probe(ctx)
	r.add(r.checkTCP())
	r.add(r.checkTLS())
	r.add(r.checkModels())
	r.add(<-account)
	r.add(r.checkModelIDs())
	for _, p := range providers {
		r.add(<-p)
	}
	r.add(<-listen)
	if r.o.Live {
		r.add(r.checkLive(ctx))
	}
}

// add records and prints res; it reports whether res is not a failure.
func (r *runner) add(res Result) bool {
	r.rep.Results = append(r.rep.Results, res)
	fmt.Fprintf(r.w, "%-4s  %-9s  %s\n", res.Level, res.Check, res.Msg)
	for _, d := range res.Detail {
		fmt.Fprintf(r.w, "%17s%s\n", "", d)
	}
	return res.Level != Fail
}

func (r *runner) verdict() {
	switch n := r.rep.Failures(); n {
	case 0:
		fmt.Fprintln(r.w, "Everything looks fine: if chats still fail, it is on Chutes' side")
	case 1:
		fmt.Fprintln(r.w, "1 problem on your side: fix the FAIL line above")
	default:
		fmt.Fprintf(r.w, "%d problems on your side: fix the FAIL lines above\n", n)
	}
}

func ok(check, format string, args ...any) Result {
	return Result{Check: check, Level: OK, Msg: fmt.Sprintf(format, args...)}
}

func warn(check, format string, args ...any) Result {
	return Result{Check: check, Level: Warn, Msg: fmt.Sprintf(format, args...)}
}

func fail(check, format string, args ...any) Result {
	return Result{Check: check, Level: Fail, Msg: fmt.Sprintf(format, args...)}
}
