package binding

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkPrepare binds 1 and 4 units in one Prepare against the fake
// kernel, with no, 2 ms and 20 ms of simulated kernel time per write (a real unbind or
// probe takes milliseconds; units are bound in parallel, so 4 should cost
// little more than 1). Each iteration restores the devices outside the
// timer. The real-kernel figure comes from the e2e lab.
func BenchmarkPrepare(b *testing.B) {
	for _, latency := range []time.Duration{0, 2 * time.Millisecond, 20 * time.Millisecond} {
		for _, n := range []int{1, 4} {
			b.Run(fmt.Sprintf("units=%d/write=%s", n, latency), func(b *testing.B) {
				e := newEnv(b, 4)
				e.k.SetLatency(latency)
				m, err := NewManager(e.root, e.state, zap.NewNop(), WithWriter(e.k), WithPollInterval(100*time.Microsecond), WithFault(""))
				if err != nil {
					b.Fatal(err)
				}
				pc, units := e.plan("vf")
				ctx := context.Background()
				b.ResetTimer()
				for range b.N {
					if err := m.Prepare(ctx, pc, units[:n]); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if err := m.RestoreAll(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
			})
		}
	}
}
