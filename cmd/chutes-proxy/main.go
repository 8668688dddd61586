// Command chutes-proxy is a local OpenAI-compatible proxy for Chutes
// (llm.chutes.ai) that keeps chat apps working while a model is down,
// overloaded or rate-limited, by failing over along fallback chains.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

func main() {
	// Where Go's own resolver would ask localhost:53 (Termux: no
	// /etc/resolv.conf), every command's lookups — init's key check, the
	// doctor's, a provider's — go where the proxy's upstream dials do.
	if r := proxy.UpstreamDNS(config.Upstream{}).Resolver(10 * time.Second); r != nil {
		net.DefaultResolver = r
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the proxy (the default)", runServe},
		{"demo", "run a simulated Chutes and the proxy in front of it, offline", runDemo},
		{"simulate", "run the simulated Chutes alone", runSimulate},
		{"doctor", "check config, key, network and models: is it Chutes, or is it me?", runDoctor},
		{"status", "print a running proxy's per-model table", runStatus},
		{"check-config", "validate the config and print the effective config (keys redacted)", runCheckConfig},
		{"init", "first-run set-up: check the key, pick a chain of listed models, write proxy.toml", runInit},
		{"version", "print the version, the commit and the Go version", runVersion},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" && args[0] != "-help" {
		return runServe(ctx, args, stdout, stderr)
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "chutes-proxy: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "chutes-proxy keeps your chat app working while Chutes is overloaded, rate-limiting or missing a model.")
	fmt.Fprintln(w, "\nUsage: chutes-proxy [command] [flags]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'chutes-proxy COMMAND --help' for a command's flags.")
	fmt.Fprintln(w, "Point your app at http://127.0.0.1:8787/v1 (OPENAI_BASE_URL).")
}

// newFlags returns a FlagSet whose --help prints the command's summary and
// flags to stdout, and whose errors go to stderr.
func newFlags(name, summary string, stdout, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "Usage: chutes-proxy %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	return fs
}

// parse parses flags; done is true when the command should return code.
func parse(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		return 2, true
	}
	return 0, false
}

// newLogger writes text logs to w. CHUTES_PROXY_LOG=debug shows more,
// =json switches to JSON lines. An "authorization" attribute is dropped
// whatever logs it, as a backstop for keys.
func newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{
		Level: slog.LevelInfo,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if strings.EqualFold(a.Key, "authorization") || strings.EqualFold(a.Key, "api_key") {
				return slog.Attr{}
			}
			return a
		},
	}
	mode := strings.ToLower(os.Getenv("CHUTES_PROXY_LOG"))
	if strings.Contains(mode, "debug") {
		opts.Level = slog.LevelDebug
	}
	if strings.Contains(mode, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
