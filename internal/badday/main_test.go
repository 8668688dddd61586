package badday

import (
	"testing"

	"go.uber.org/goleak"
)

// No ignores: a run closes its proxy, its servers (and so their
// connections), both simulators (which ends every hanging handler) and its
// users' client.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
