package assemble

import (
	"testing"

	"go.uber.org/goleak"
)

// No ignores: the fidelity tests close their servers (and with them their
// clients' idle connections) and the simulator's handlers end with their
// requests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
