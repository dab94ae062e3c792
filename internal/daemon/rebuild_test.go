package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/globalreplica/globalreplica/child"
)

// exportChunk asks an export session for chunk n.
func exportChunk(t *testing.T, nc *nats.Conn, session string, n uint64) *nats.Msg {
	t.Helper()
	data, _ := json.Marshal(child.ExportNext{Chunk: n})
	msg, err := nc.Request(session, data, 10*time.Second)
	if err != nil {
		t.Fatalf("chunk %d: %v", n, err)
	}
	return msg
}

// TestExportSession: a region's export over its control service records
// the position first and hands out the keys in chunks no larger than
// asked, a hash larger than a chunk cut across several; asking for the
// last chunk again repeats it, asking out of order is an error; the
// decoded stream holds every key.
func TestExportSession(t *testing.T) {
	ctx := context.Background()
	rs := startRegions(t, "fra")
	fra := rs[0]
	for i := range 30 {
		if err := fra.c.Set(ctx, fmt.Sprintf("k%d", i), strings.Repeat("v", 100), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var args []any
	for i := range 2000 {
		args = append(args, fmt.Sprintf("field-%d", i), i)
	}
	if err := fra.c.HSet(ctx, "big", args...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fra.c.Del(ctx, "k0").Err(); err != nil { // a tombstone: db1 only
		t.Fatal(err)
	}
	nc, _ := fra.nats.Connect()
	open, err := ctl[child.ExportReply](t, nc, "fra", child.CtlExport, child.ExportRequest{ChunkBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	pos, _ := fra.d.Engine.Position(ctx)
	if open.Position["fra"] != pos.Seq || open.ChunkBytes != 4096 || open.Keys < 31 || open.Session == "" {
		t.Fatalf("open = %+v (seq %d)", open, pos.Seq)
	}
	if _, err := ctl[child.ExportReply](t, nc, "fra", child.CtlExport, child.ExportRequest{ChunkBytes: 10}); err == nil || !strings.Contains(err.Error(), "at least 1024") {
		t.Fatalf("a chunk of 10 bytes: %v", err)
	}
	var stream []byte
	var n uint64
	for ; n < 1000; n++ {
		msg := exportChunk(t, nc, open.Session, n)
		if e := msg.Header.Get(child.ExportHeaderError); e != "" {
			t.Fatal(e)
		}
		if len(msg.Data) > 4096 {
			t.Fatalf("chunk %d has %d bytes", n, len(msg.Data))
		}
		if n == 1 { // a retry gets the same bytes
			again := exportChunk(t, nc, open.Session, n)
			if !bytes.Equal(again.Data, msg.Data) {
				t.Fatal("chunk 1 asked again differs")
			}
			if e := exportChunk(t, nc, open.Session, n+5).Header.Get(child.ExportHeaderError); !strings.Contains(e, "expected") {
				t.Fatalf("a chunk out of order: %q", e)
			}
		}
		stream = append(stream, msg.Data...)
		if msg.Header.Get(child.ExportHeaderDone) == "1" {
			break
		}
	}
	recs, used, err := child.DecodeRecords(stream)
	if err != nil || used != len(stream) {
		t.Fatalf("decoding %d bytes: %d used, %v", len(stream), used, err)
	}
	keys := map[string]bool{}
	bigSize := 0
	for i := range recs {
		keys[recs[i].Key] = true
		if recs[i].Key == "big" {
			bigSize = recs[i].Size()
		}
	}
	if len(keys) != 31 || !keys["k0"] || !keys["k29"] || bigSize <= 4096 || n < 3 {
		t.Fatalf("%d keys in %d chunks, big has %d bytes", len(keys), n+1, bigSize)
	}
	if recs[0].Slots[0].Dump == nil && recs[0].Key != "k0" {
		t.Fatalf("record %s has no database 0 copy", recs[0].Key)
	}
}

// TestGuardLeavesRebuildAlone: while a rebuild marks the region's Redis,
// the readiness guard does not make it ready again: local writes get
// TRYAGAIN until the rebuild ends.
func TestGuardLeavesRebuildAlone(t *testing.T) {
	ctx := context.Background()
	fra := startRegions(t, "fra")[0]
	if err := fra.c.Set(ctx, "a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fra.d.Engine.BeginRebuild(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // two ticks of the guard
	if err := fra.c.Set(ctx, "a", "2", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("a write during the rebuild: %v", err)
	}
	if err := fra.d.Engine.EndRebuild(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for fra.c.Set(ctx, "a", "3", 0).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the guard did not make the region ready after the rebuild")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
