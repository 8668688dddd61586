package simulator

import (
	"testing"

	"go.uber.org/goleak"
)

// No ignores: every test closes its servers (which closes their clients'
// idle connections) and every handler returns once its client is gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
