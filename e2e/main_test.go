package e2e

import (
	"os"
	"testing"

	"github.com/globalreplica/globalreplica/e2e/harness"
)

// TestMain disables testcontainers' Ryuk reaper before the first
// testcontainers call and sweeps leftovers of earlier runs; see harness.Main.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
