package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/channel"
)

// runJSON runs the CLI with --json, wants exit code code and decodes the
// output into v (strict: every field known).
func (c *cli) runJSON(v any, code int, args ...string) {
	c.t.Helper()
	out, errOut, got := c.run(append(args, "--json")...)
	if got != code {
		c.t.Fatalf("channel-manager %s --json: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errOut)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		c.t.Fatalf("channel-manager %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestVerifyAndConflicts: verify passes on converged regions and exits 5
// with the differing key after a write made directly in one region's Redis;
// conflicts shows concurrent writes resolved in both regions.
func TestVerifyAndConflicts(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp, fra := startChild(t, mgr, "sgp"), startChild(t, mgr, "fra")
	c.ok("region", "add", "sgp", "--region-nats", sgp.nats.URL(), "--redis", sgp.d.Engine.Redis().Options().Addr)
	c.ok("region", "add", "fra", "--region-nats", fra.nats.URL(), "--redis", fra.d.Engine.Redis().Options().Addr)
	for _, k := range []string{"a", "b", "c"} {
		if err := sgp.c.Set(ctx, k, "v-"+k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fra.c.HSet(ctx, "h", "f", "1").Err(); err != nil {
		t.Fatal(err)
	}
	waitGet(t, fra.c, "c", "v-c")
	eventually(t, "verify passes", func() bool {
		_, _, code := c.run("verify")
		return code == exitOK
	})
	var v verifyView
	c.runJSON(&v, exitOK, "verify")
	if !v.Equal || len(v.Regions) != 2 || v.Regions[0].Keys != 4 || v.Regions[0].Digest != v.Regions[1].Digest || len(v.DifferingKeys) != 0 {
		t.Fatalf("verify = %+v", v)
	}
	if out := c.ok("verify"); !strings.Contains(out, "equal: 2 region(s)") {
		t.Fatalf("verify table:\n%s", out)
	}

	// corruption in fra's Redis, behind the engine's back
	if err := fra.d.Engine.Redis().HSet(ctx, "h", "f", "2").Err(); err != nil {
		t.Fatal(err)
	}
	v = verifyView{}
	c.runJSON(&v, exitDiffers, "verify")
	if v.Equal || len(v.DifferingKeys) != 1 || v.DifferingKeys[0].Key != "h" || len(v.DifferingKeys[0].Views) != 2 {
		t.Fatalf("verify after corruption = %+v", v)
	}
	views := map[string]verifyKeyView{}
	for _, kv := range v.DifferingKeys[0].Views {
		views[kv.Region] = kv
	}
	if views["sgp"].Value != `f="1"` || views["fra"].Value != `f="2"` || views["fra"].Type != "hash" {
		t.Fatalf("views = %+v", views)
	}
	out, errOut, code := c.run("verify")
	if code != exitDiffers || !strings.Contains(out, "DIFFERENT: 1 differing key(s)") || !strings.Contains(out, `f="2"`) || !strings.Contains(errOut, "regions differ") {
		t.Fatalf("verify table: exit %d\n%s\n%s", code, out, errOut)
	}
	c.fails(exitNotFound, "no such region", "verify", "--region", "nope")
	c.fails(exitUsage, "--max-keys", "verify", "--max-keys", "0")

	// concurrent writes while both channels are paused
	c.ok("channel", "pause", "sgp", "fra")
	c.ok("channel", "pause", "fra", "sgp")
	eventually(t, "both paused", func() bool {
		s1, s2 := c.status("sgp", "fra"), c.status("fra", "sgp")
		return s1.State == channel.StatePaused && s2.State == channel.StatePaused
	})
	if err := sgp.c.Set(ctx, "color", "red", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if err := fra.c.Set(ctx, "color", "blue", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.ok("channel", "resume", "sgp", "fra")
	c.ok("channel", "resume", "fra", "sgp")
	waitGet(t, sgp.c, "color", "blue")
	waitGet(t, fra.c, "color", "blue")

	// fra shows blue at once (its own write): wait until it applied red too
	var cv conflictsView
	eventually(t, "both regions resolved the conflict", func() bool {
		cv = conflictsView{}
		c.runJSON(&cv, exitOK, "conflicts")
		return cv.Totals["lww"] >= 2
	})
	if len(cv.Conflicts) != 2 || cv.Totals["lww"] != 2 || cv.Counts["sgp"]["lww"] != 1 || cv.Counts["fra"]["lww"] != 1 || len(cv.Unreachable) != 0 {
		t.Fatalf("conflicts = %+v", cv)
	}
	for _, x := range cv.Conflicts {
		if x.Key != "color" || x.Kind != "lww" || x.Winner != "fra" || x.Won == nil || x.Won.Value != "blue" ||
			len(x.Lost) != 1 || x.Lost[0].Value != "red" || !strings.Contains(x.Why, "last writer wins") {
			t.Fatalf("conflict = %+v", x)
		}
	}
	if !cv.Conflicts[0].Time.After(cv.Conflicts[1].Time) && !cv.Conflicts[0].Time.Equal(cv.Conflicts[1].Time) {
		t.Fatal("not newest first")
	}
	var one conflictsView
	c.runJSON(&one, exitOK, "conflicts", "--limit", "1", "--region", "fra")
	if len(one.Conflicts) != 1 || one.Conflicts[0].Region != "fra" || len(one.Counts) != 1 || one.Totals["lww"] != 1 {
		t.Fatalf("conflicts --region fra --limit 1 = %+v", one)
	}
	out = c.ok("conflicts")
	if !strings.Contains(out, "KIND") || !strings.Contains(out, "lww") || !strings.Contains(out, "LWW") {
		t.Fatalf("conflicts table:\n%s", out)
	}

	// a region without a running child: verify and conflicts fail with 1
	c.ok("region", "add", "lon", "--region-nats", "nats://127.0.0.1:1", "--redis", "127.0.0.1:1")
	c.fails(exitFailure, "region lon", "verify", "--timeout", "2s")
	out, errOut, code = c.run("conflicts", "--timeout", "2s")
	if code != exitFailure || !strings.Contains(errOut, "lon") || !strings.Contains(out, "unreachable lon") {
		t.Fatalf("conflicts with lon down: exit %d\n%s\n%s", code, out, errOut)
	}
	// evicted regions are skipped
	c.ok("region", "evict", "lon")
	v = verifyView{}
	c.runJSON(&v, exitDiffers, "verify")
	if len(v.Skipped) != 1 || v.Skipped[0].Region != "lon" {
		t.Fatalf("skipped = %+v", v.Skipped)
	}
}
