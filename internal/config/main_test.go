package config

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: Watch
// promises to start none and to return on cancel.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envOf returns a Getenv that sees only kv, so that no test depends on the
// real environment.
func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
