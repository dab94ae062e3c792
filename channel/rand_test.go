package channel

import (
	"math/rand/v2"

	"github.com/globalreplica/globalreplica/internal/workload"
)

var mix = workload.Mix{Keys: 4, Fields: 3, NoTTL: true}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 99)) }
