package daemon

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/globalreplica/globalreplica/child"
)

// ctl sends one control request to a region's children.
func ctl[T any](t *testing.T, nc *nats.Conn, region, endpoint string, req any) (T, error) {
	t.Helper()
	var out T
	var data []byte
	if req != nil {
		var err error
		if data, err = json.Marshal(req); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := nc.Request(child.ControlSubject("test", region)+"."+endpoint, data, 10*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", region, endpoint, err)
	}
	if e := msg.Header.Get(micro.ErrorHeader); e != "" {
		return out, &micro.NATSError{Subject: msg.Subject, Description: e}
	}
	if err := json.Unmarshal(msg.Data, &out); err != nil {
		t.Fatalf("%s %s: %v: %s", region, endpoint, err, msg.Data)
	}
	return out, nil
}

func TestControlEndpoints(t *testing.T) {
	ctx := context.Background()
	rs := startRegions(t, "fra", "sgp")
	fra, sgp := rs[0], rs[1]
	for _, kv := range [][2]string{{"a", "1"}, {"b", "2"}, {"c", "3"}} {
		if err := fra.c.Set(ctx, kv[0], kv[1], 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fra.c.HSet(ctx, "h", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	if err := sgp.c.Set(ctx, "z", "last", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, sgp.c, "c", "3")
	waitValue(t, fra.c, "z", "last")
	ncf, _ := fra.nats.Connect()
	ncs, _ := sgp.nats.Connect()

	// digests converge
	deadline := time.Now().Add(20 * time.Second)
	for {
		df, _ := ctl[child.Digest](t, ncf, "fra", child.CtlDigest, nil)
		ds, _ := ctl[child.Digest](t, ncs, "sgp", child.CtlDigest, nil)
		if df == ds && df.Keys == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("digests %+v and %+v", df, ds)
		}
		time.Sleep(50 * time.Millisecond)
	}
	br, err := ctl[child.BucketsReply](t, ncf, "fra", child.CtlBuckets, child.BucketsRequest{Bits: 4})
	if err != nil || br.Digest.Keys != 5 || br.Bits != 4 || len(br.Buckets) == 0 {
		t.Fatalf("buckets: %+v %v", br, err)
	}
	var all []int
	for _, b := range br.Buckets {
		all = append(all, b.Bucket)
	}
	kr, err := ctl[child.KeysReply](t, ncf, "fra", child.CtlKeys, child.KeysRequest{Bits: 4, Buckets: all})
	if err != nil || len(kr.Keys) != 5 || kr.Keys[0].Key != "a" {
		t.Fatalf("keys: %+v %v", kr, err)
	}
	views, err := ctl[[]child.KeyView](t, ncs, "sgp", child.CtlView, child.ViewRequest{Keys: []string{"h", "nope"}})
	if err != nil || len(views) != 2 || views[0].Type != "hash" || views[0].Value != `f="v"` || views[1].Exists {
		t.Fatalf("view: %+v %v", views, err)
	}
	pos, err := ctl[child.PositionReply](t, ncs, "sgp", child.CtlPosition, nil)
	if err != nil || pos.Region != "sgp" || pos.Seq != 1 || pos.Applied["fra"] != 4 {
		t.Fatalf("position: %+v %v", pos, err)
	}
	cr, err := ctl[child.ConflictsReply](t, ncs, "sgp", child.CtlConflicts, child.ConflictsRequest{N: 10})
	if err != nil || len(cr.Conflicts) != 0 {
		t.Fatalf("conflicts: %+v %v", cr, err)
	}
	if _, err := ctl[child.BucketsReply](t, ncf, "fra", child.CtlBuckets, child.BucketsRequest{Bits: 40}); err == nil {
		t.Fatal("bits 40 accepted")
	}
	msg, err := ncf.Request(child.ControlSubject("test", "fra")+"."+child.CtlKeys, []byte("{not json"), 10*time.Second)
	if err != nil || msg.Header.Get(micro.ErrorCodeHeader) != "400" {
		t.Fatalf("bad json: %v %v", msg, err)
	}
}
