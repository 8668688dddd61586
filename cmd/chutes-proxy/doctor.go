package main

import (
	"context"
	"fmt"
	"io"
)

func runDoctor(_ context.Context, _ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "chutes-proxy doctor: not built yet")
	return 1
}
