package main

import (
	"context"
	"io"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
	"github.com/chutes-proxy/chutes-proxy/internal/doctor"
)

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("doctor", "Check config, key, DNS, TCP, TLS, the upstream's /models, the account behind the key, that every configured model exists, "+
		"each other provider (reachable, its own key not refused, its models listed) and the listen port: one line per check (ok, warn or FAIL with the fix). "+
		"Exit 0 when nothing failed, 1 otherwise. "+
		"Is it Chutes, or is it me?", stdout, stderr)
	file := fs.String("config", "", "config file (default: $CHUTES_PROXY_CONFIG, ./proxy.toml, chutes-proxy/proxy.toml in the user config folder, else the built-in defaults)")
	live := fs.Bool("live", false, "also send one minimal chat completion (max_tokens 1) to the first configured model, proving key, balance and model end to end; it counts against the daily quota")
	if code, done := parse(fs, args); done {
		return code
	}
	rep := doctor.Run(ctx, doctor.Options{Load: config.Options{File: *file}, Live: *live}, stdout)
	if rep.Failures() > 0 {
		return 1
	}
	return 0
}
