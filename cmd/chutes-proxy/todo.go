package main

import (
	"context"
	"fmt"
	"io"
)

func notYet(name string) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, _ []string, _, stderr io.Writer) int {
		fmt.Fprintf(stderr, "chutes-proxy %s: not built yet\n", name)
		return 1
	}
}

var (
	runDemo     = notYet("demo")
	runSimulate = notYet("simulate")
	runDoctor   = notYet("doctor")
	runStatus   = notYet("status")
)
