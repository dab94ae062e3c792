package main

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/manager"
)

// TestInstanceCommands: create, show (table and JSON), refusals and
// delete.
func TestInstanceCommands(t *testing.T) {
	c, _ := newCLI(t)
	c.fails(exitNotFound, "no such instance", "instance", "show")
	c.fails(exitNotFound, "no such instance", "region", "list")
	c.fails(exitNotFound, "no such instance", "region", "add", "sgp", "--region-nats", "nats://x", "--redis", "r")

	var created instanceView
	c.json(&created, "instance", "create", "shop", "--retention", "72h")
	if created.Name != "shop" || created.Retention != "72h0m0s" || created.ConfigBucket != "gr-config-shop" || created.Created.IsZero() {
		t.Fatalf("create = %+v", created)
	}
	c.fails(exitFailure, "exists already", "instance", "create")

	out := c.ok("instance", "show")
	for _, want := range []string{"name:", "shop", "retention:", "72h0m0s", "lock:", "free"} {
		if !strings.Contains(out, want) {
			t.Fatalf("show lacks %q:\n%s", want, out)
		}
	}
	c.ok("region", "add", "sgp", "--region-nats", "nats://sgp:4222", "--redis", "sgp:6379")
	var shown instanceView
	c.json(&shown, "instance", "show", "shop")
	if shown.Regions != 1 || shown.Channels != 0 || shown.Lock != nil || !shown.Created.Equal(created.Created) {
		t.Fatalf("show = %+v", shown)
	}

	c.fails(exitFailure, "still has regions", "instance", "delete")
	c.json(&shown, "instance", "show")
	if shown.Regions != 1 {
		t.Fatalf("a refused delete changed the instance: %+v", shown)
	}
	var deleted map[string]string
	c.json(&deleted, "instance", "delete", "--force")
	if deleted["deleted"] != "shop" {
		t.Fatalf("delete = %v", deleted)
	}
	c.fails(exitNotFound, "no such instance", "instance", "show")
	// Created again, it starts empty.
	c.ok("instance", "create")
	var regions []regionView
	c.json(&regions, "region", "list")
	if len(regions) != 0 {
		t.Fatalf("regions after re-create: %+v", regions)
	}
}

// TestRegionCommands: add, list, evict, remove with their JSON, and the
// refusals that change nothing.
func TestRegionCommands(t *testing.T) {
	c, srv := newCLI(t)
	c.ok("instance", "create")
	var ch regionChange
	c.json(&ch, "region", "add", "sgp", "--region-nats", "nats://sgp:4222", "--redis", "sgp:6379", "--replica", "sgp2:6379")
	if ch.Region.ID != "sgp" || ch.Region.Replica != "sgp2:6379" || ch.Region.State != "active" || len(ch.Created) != 0 || ch.Removed == nil {
		t.Fatalf("add sgp = %+v", ch)
	}
	out := c.ok("region", "add", "fra", "--region-nats", "nats://fra:4222", "--redis", "fra:6379")
	if !strings.Contains(out, "channels created: sgp->fra, fra->sgp") {
		t.Fatalf("add fra: %q", out)
	}
	c.json(&ch, "region", "add", "iad", "--region-nats", "nats://iad:4222", "--redis", "iad:6379")
	if pairs(ch.Created) != "fra->iad, iad->fra, sgp->iad, iad->sgp" {
		t.Fatalf("add iad created %s", pairs(ch.Created))
	}

	before := c.ok("channel", "list", "--json")
	c.fails(exitFailure, "exists already", "region", "add", "fra", "--region-nats", "n", "--redis", "r")
	c.fails(exitNotFound, "no such region", "region", "remove", "lon")
	c.fails(exitNotFound, "no such region", "region", "evict", "lon")
	c.fails(exitNotFound, "no such region", "channel", "create", "sgp", "lon")
	c.fails(exitNotFound, "no such region", "channel", "pause", "lon", "sgp")
	c.fails(exitFailure, "exists already", "channel", "create", "sgp", "fra")
	if after := c.ok("channel", "list", "--json"); after != before {
		t.Fatalf("refused commands changed the channels:\n%s\n%s", before, after)
	}

	var regions []regionView
	c.json(&regions, "region", "list")
	if len(regions) != 3 || regions[0].ID != "fra" || regions[2].ID != "sgp" || regions[2].Replica != "sgp2:6379" || regions[0].Children != 0 {
		t.Fatalf("list = %+v", regions)
	}
	table := c.ok("region", "list")
	if !strings.HasPrefix(table, "REGION") || !strings.Contains(table, "nats://fra:4222") {
		t.Fatalf("list table:\n%s", table)
	}

	// A rebuild shows in the list while it runs and once it failed (the
	// region refuses writes until a rebuild succeeds).
	_, js := srv.Connect()
	ctx := context.Background()
	s, err := manager.Bind(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RequestRebuild(ctx, "fra", "sgp", "rb-1"); err != nil {
		t.Fatal(err)
	}
	c.json(&regions, "region", "list")
	if regions[0].State != "rebuilding (pending)" || regions[0].Rebuild == nil || regions[0].Rebuild.From != "sgp" || regions[2].State != "active" {
		t.Fatalf("list while fra is rebuilt: %+v", regions)
	}
	if _, err := s.UpdateRebuild(ctx, "fra", "rb-1", func(r *manager.Rebuild) error {
		r.Phase, r.Error = manager.RebuildFailed, "peer unreachable"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out := c.ok("region", "list"); !strings.Contains(out, "rebuild failed") {
		t.Fatalf("list after a failed rebuild:\n%s", out)
	}

	c.json(&ch, "region", "evict", "iad")
	if !ch.Region.Evicted || ch.Region.State != "evicted" || len(ch.Removed) != 4 {
		t.Fatalf("evict = %+v", ch)
	}
	c.fails(exitFailure, "evicted", "region", "evict", "iad")
	c.fails(exitFailure, "evicted", "channel", "create", "iad", "fra")
	out = c.ok("region", "list")
	if !strings.Contains(out, "evicted") {
		t.Fatalf("list after evict:\n%s", out)
	}

	out = c.ok("region", "remove", "iad")
	if !strings.Contains(out, "region iad removed; channels removed: none") {
		t.Fatalf("remove iad: %q", out)
	}
	c.json(&ch, "region", "remove", "fra")
	if pairs(ch.Removed) != "fra->sgp, sgp->fra" {
		t.Fatalf("remove fra removed %s", pairs(ch.Removed))
	}
	c.json(&regions, "region", "list")
	if len(regions) != 1 || regions[0].ID != "sgp" {
		t.Fatalf("list = %+v", regions)
	}
}

// TestBusy: while another manager holds the lock, every mutating command
// exits with 4, names the holder and changes nothing; read commands still
// work.
func TestBusy(t *testing.T) {
	c, srv := newCLI(t)
	c.ok("instance", "create")
	c.ok("region", "add", "sgp", "--region-nats", "nats://sgp:4222", "--redis", "sgp:6379")
	c.ok("region", "add", "fra", "--region-nats", "nats://fra:4222", "--redis", "fra:6379")
	_, js := srv.Connect()
	ctx := context.Background()
	s, err := manager.Bind(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "other-manager", "rebuild fra --from sgp", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"region", "add", "iad", "--region-nats", "nats://iad:4222", "--redis", "iad:6379"},
		{"region", "remove", "fra"},
		{"region", "evict", "fra"},
		{"channel", "pause", "sgp", "fra"},
		{"channel", "resume", "sgp", "fra"},
		{"channel", "throttle", "sgp", "fra", "--ops", "10"},
		{"channel", "delete", "sgp", "fra"},
		{"channel", "create", "sgp", "fra"},
		{"instance", "delete", "--force"},
	} {
		c.fails(exitBusy, "other-manager (rebuild fra --from sgp)", args...)
	}
	var shown instanceView
	c.json(&shown, "instance", "show")
	if shown.Lock == nil || shown.Lock.Holder != "other-manager" || shown.Lock.Expires.Before(time.Now()) {
		t.Fatalf("show while locked: %+v", shown.Lock)
	}
	after, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	delete(after.Revisions, manager.KeyLock) // the other manager's lock
	if !reflect.DeepEqual(after.Revisions, before.Revisions) {
		t.Fatalf("busy commands changed the state: revisions %v -> %v", before.Revisions, after.Revisions)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	c.ok("channel", "pause", "sgp", "fra")
}
