package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

// drainTimeout is how long in-flight requests and streams may take to
// finish after SIGINT/SIGTERM.
const drainTimeout = 30 * time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "Run the proxy until SIGINT/SIGTERM, then let in-flight requests finish (up to 30 s).", stdout, stderr)
	file := fs.String("config", "", "config file (default: $CHUTES_PROXY_CONFIG, ./proxy.toml, chutes-proxy/proxy.toml in the user config folder, else the built-in defaults)")
	listen := fs.String("listen", "", "address to listen on, e.g. 127.0.0.1:8787 (overrides the config)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiler (net/http/pprof) on this loopback address, e.g. 127.0.0.1:6060")
	if code, done := parse(fs, args); done {
		return code
	}
	lw := newBatchWriter(stderr)
	defer lw.Flush()
	log := newLogger(lw)
	if *pprofAddr != "" {
		stopPprof, err := startPprof(*pprofAddr, log)
		if err != nil {
			fmt.Fprintln(stderr, "chutes-proxy: --pprof:", err)
			return 2
		}
		defer stopPprof()
	}
	opts := config.Options{File: *file, Listen: *listen}
	cfg, err := config.Load(opts)
	if err != nil {
		printConfigError(stderr, err)
		return 1
	}
	return serve(ctx, cfg, opts, log, stdout, nil)
}

// printConfigError prints Problems one per line, or the error.
func printConfigError(w io.Writer, err error) {
	var ps config.Problems
	if errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(w, p.Error())
		}
		return
	}
	fmt.Fprintln(w, "chutes-proxy:", err)
}

// reloadSignals are the signals that reload the config: SIGHUP, except on
// Windows, which has none (Go never delivers one there), so there the file
// watch alone reloads. Ctrl-C and closing the console arrive as os.Interrupt
// and SIGTERM on every OS, which main turns into ctx's end: a drain.
func reloadSignals() []os.Signal {
	if runtime.GOOS == "windows" {
		return nil
	}
	return []os.Signal{syscall.SIGHUP}
}

// serve runs the proxy for cfg until ctx ends. ready, when set, receives
// the bound address (for demo and tests).
func serve(ctx context.Context, cfg *config.Config, opts config.Options, log *slog.Logger, stdout io.Writer, ready func(addr string)) int {
	for _, n := range cfg.Notes {
		log.Warn(n)
	}
	app, err := newApp(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	defer app.close()

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.Listen, "err", err,
			"fix", "another program (or another chutes-proxy) holds the port: stop it or set listen / --listen to another port")
		return 1
	}
	// Catch SIGHUP before anyone can know the address, so that an early
	// one reloads instead of killing the process.
	hup := make(chan os.Signal, 1)
	if sigs := reloadSignals(); len(sigs) > 0 { // none would mean all
		signal.Notify(hup, sigs...)
		defer signal.Stop(hup)
	}
	// Reload on file change or SIGHUP; requests in flight keep the config
	// they started with. The watch starts before anyone can know the
	// address, so that it has read the file before most early edits.
	wctx, cancelWatch := context.WithCancel(ctx)
	defer cancelWatch()
	reload := make(chan string, 1)
	if cfg.Source != "" {
		go config.Watch(wctx, cfg.Source, time.Second, func() {
			select {
			case reload <- "file changed":
			default:
			}
		})
	}
	go func() {
		for {
			select {
			case <-wctx.Done():
				return
			case <-hup:
				select {
				case reload <- "SIGHUP":
				default:
				}
			case why := <-reload:
				app.reload(opts, cfg.Listen, why)
			}
		}
	}()

	addr := ln.Addr().String()
	log.Info("chutes-proxy listening", "url", "http://"+addr+"/v1", "status_page", "http://"+addr+"/",
		"config", cfg.SourceName(), "upstream", cfg.Upstream.BaseURL, "version", version())
	if d := proxy.UpstreamDNS(cfg.Upstream); d.Fallback != "" {
		// Termux: Go's resolver would ask localhost:53, which refuses.
		log.Info("upstream names are looked up with a fallback DNS server", "resolver", d.Server, "why", d.Fallback,
			"fix", "set [upstream] resolver to choose another")
	}
	if ready != nil {
		ready(addr)
	}

	srv := proxy.HTTPServer(cfg.Listen, app.handler, log)
	if err := proxy.Serve(ctx, srv, ln, drainTimeout); err != nil {
		log.Error("server stopped", "err", err)
		return 1
	}
	log.Info("chutes-proxy stopped")
	return 0
}
