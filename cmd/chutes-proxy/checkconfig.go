package main

import (
	"context"
	"fmt"
	"io"

	"github.com/chutes-proxy/chutes-proxy/internal/config"
)

func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check-config", "Validate the config and print the effective config (keys redacted). Exit 1 with FILE:KEY: problem lines when invalid.", stdout, stderr)
	file := fs.String("config", "", "config file (default: $CHUTES_PROXY_CONFIG, ./proxy.toml, chutes-proxy/proxy.toml in the user config folder, else the built-in defaults)")
	if code, done := parse(fs, args); done {
		return code
	}
	cfg, err := config.Load(config.Options{File: *file})
	if err != nil {
		// The problems are this command's report: stdout, like the config
		// it prints when all is well.
		printConfigError(stdout, err)
		return 1
	}
	for _, n := range cfg.Notes {
		fmt.Fprintf(stdout, "# note: %s\n", n)
	}
	_, _ = stdout.Write(cfg.TOML())
	return 0
}
