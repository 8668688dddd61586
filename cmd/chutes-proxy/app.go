package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
)

// app wires the proxy's parts for one process.
type app struct {
	log     *slog.Logger
	proxy   *proxy.Server
	handler http.Handler
}

func newApp(ctx context.Context, cfg *config.Config, log *slog.Logger) (*app, error) {
	router := failover.New(cfg, log, nil)
	cat := catalog.New()
	srv := proxy.New(proxy.Options{Config: cfg, Router: router, Catalog: cat, Logger: log.With("component", "proxy")})
	return &app{log: log, proxy: srv, handler: srv}, nil
}

// reload loads the config again and swaps it in when valid.
func (a *app) reload(opts config.Options, listen, why string) {
	cfg, err := config.Load(opts)
	if err != nil {
		a.log.Error("config not reloaded: the running config stays", "why", why, "problems", err.Error())
		return
	}
	if cfg.Listen != listen {
		a.log.Warn("listen changed in the config: restart chutes-proxy for it to take effect", "running", listen, "configured", cfg.Listen)
	}
	for _, n := range cfg.Notes {
		a.log.Warn(n)
	}
	a.proxy.Reload(cfg)
	a.log.Info("config reloaded", "why", why, "config", cfg.SourceName(), "models", len(cfg.Models))
}

func (a *app) close() { a.proxy.Close() }
