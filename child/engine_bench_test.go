package child

import (
	"context"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

func BenchmarkEngineSet(b *testing.B) {
	ctx := context.Background()
	e, err := NewEngine(ctx, EngineConfig{Instance: "b", Region: "sgp"}, testredis.Start(b).Client(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	if err := e.MarkReady(ctx); err != nil {
		b.Fatal(err)
	}
	cmds := make([][]string, 100)
	b.ResetTimer()
	for i := 0; i < b.N; i += 100 {
		for j := range cmds {
			cmds[j] = []string{"incrby", fmt.Sprintf("key:%d", (i+j)%10000), "1"}
		}
		_, errs := e.WritePipeline(ctx, cmds)
		if errs[0] != nil {
			b.Fatal(errs[0])
		}
	}
}
