package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"

	"github.com/chutes-proxy/chutes-proxy/internal/catalog"
	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/failover"
	"github.com/chutes-proxy/chutes-proxy/internal/health"
	"github.com/chutes-proxy/chutes-proxy/internal/proxy"
	"github.com/chutes-proxy/chutes-proxy/internal/quota"
)

// app wires the proxy's parts for one process: the health Monitor hears
// every attempt (as the router's Observer) and every resumed stream,
// serves /, /status and /metrics from the router's state, and probes the
// upstream and each provider in the background with the proxy's upstream
// client; the quota Counter counts upstream attempts
// and gates requests at [quota] daily_requests.
type app struct {
	log     *slog.Logger
	proxy   *proxy.Server
	monitor *health.Monitor
	quota   *quota.Counter
	handler http.Handler

	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

func newApp(ctx context.Context, cfg *config.Config, log *slog.Logger) (*app, error) {
	q := quota.Open(quota.Options{File: quotaFile(cfg, log), Limit: cfg.Quota.DailyRequests, Logger: log})
	cat := catalog.New()
	mon := health.New(health.Options{Config: cfg, Catalog: cat, Logger: log, Quota: q})
	router := failover.New(cfg, log, mon)
	srv := proxy.New(proxy.Options{
		Config:  cfg,
		Router:  router,
		Catalog: cat,
		Logger:  log.With("component", "proxy"),
		Pages:   mon.Handler(router),
		Gate:    q.Gate,
		Account: mon.AccountSummary,
		Done:    mon.Served,
		Resumed: mon.Resumed,
	})

	a := &app{log: log, proxy: srv, monitor: mon, quota: q, handler: srv}
	actx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	a.wg.Add(2)
	go func() { defer a.wg.Done(); mon.Run(actx, srv.ClientFor) }()
	go func() { defer a.wg.Done(); q.Run(actx) }()
	return a, nil
}

// quotaFile is where the daily count is kept: [quota] state_file, else the
// user's state directory when a cap is set; "" (memory only) otherwise, so
// that a proxy without a cap writes nothing.
func quotaFile(cfg *config.Config, log *slog.Logger) string {
	if cfg.Quota.StateFile != "" {
		return cfg.Quota.StateFile
	}
	if cfg.Quota.DailyRequests <= 0 {
		return ""
	}
	f, err := quota.DefaultFile()
	if err != nil {
		log.Warn("the daily count is kept in memory only", "err", err)
		return ""
	}
	return f
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
	a.quota.SetLimit(cfg.Quota.DailyRequests)
	a.quota.SetFile(quotaFile(cfg, a.log))
	a.monitor.Reload(cfg)
	a.log.Info("config reloaded", "why", why, "config", cfg.SourceName(), "models", len(cfg.Models))
}

// close stops the probe and the quota writer, writes the last counts and
// releases idle upstream connections. It runs after the server drained, so
// every attempt of the last requests is counted.
func (a *app) close() {
	a.closeOnce.Do(func() {
		a.cancel()
		a.wg.Wait()
		if err := a.quota.Close(); err != nil {
			a.log.Warn("the last quota counts were not saved", "err", err)
		}
		a.proxy.Close()
	})
}
