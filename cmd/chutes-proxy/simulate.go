package main

import (
	"context"
	"fmt"
	"io"
)

func runSimulate(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "chutes-proxy simulate: not built yet")
	return 1
}
