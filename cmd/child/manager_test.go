package main

import (
	"errors"
	"strings"
	"testing"
)

// TestManagerFlag: --manager-nats takes the channels from the channel
// manager; it excludes --peers, needs --nats, and reuses the region's NATS
// credentials.
func TestManagerFlag(t *testing.T) {
	base := []string{"--instance", "shop", "--region", "sgp", "--nats", "nats://sgp:4222"}
	env := map[string]string{"GR_NATS_USER": "gr", "GR_NATS_PASSWORD": "pw", "GR_MANAGER_NATS": "nats://mgr:4222"}
	c, err := resolve(t, base, env)
	if err != nil {
		t.Fatal(err)
	}
	m := managerConfig(c)
	if c.Manager != "nats://mgr:4222" || m.NATS.URL != "nats://mgr:4222" || m.NATS.User != "gr" || m.NATS.Password != "pw" {
		t.Fatalf("manager config = %+v from %+v", m, c)
	}
	if m := managerConfig(config{}); m.NATS.URL != "" {
		t.Fatalf("no manager: %+v", m)
	}
	_, err = resolve(t, append(base, "--peers", "fra=nats://fra:4222"), env)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("--peers with a manager: %v", err)
	}
	_, err = resolve(t, []string{"--instance", "shop", "--region", "sgp", "--manager-nats", "nats://mgr:4222"}, nil)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "needs --nats") {
		t.Fatalf("--manager-nats without --nats: %v", err)
	}
}
