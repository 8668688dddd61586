package main

import (
	"context"
	"fmt"
	"io"
)

func runStatus(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "chutes-proxy status: not built yet")
	return 1
}
