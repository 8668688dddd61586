package jsonscan

import (
	"testing"

	"go.uber.org/goleak"
)

// No ignores: the scanner starts no goroutine.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
